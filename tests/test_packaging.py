"""The package declares what it imports, and the Makefile installs the `structured` extra's exact pins."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")
REPO = Path(__file__).resolve().parents[1]
FIRST_PARTY = {"hearth"}


def project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def name_of(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def imported_modules() -> set[str]:
    found = set()
    for folder in FIRST_PARTY:
        for path in (REPO / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    found |= {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - FIRST_PARTY


def test_every_imported_distribution_is_declared():
    declared = {name_of(r) for r in project()["dependencies"]}
    for extra in ("structured", "triton"):
        declared |= {name_of(r) for r in project()["optional-dependencies"][extra]}
    distributions = importlib.metadata.packages_distributions()
    missing = {}
    for module in imported_modules():
        names = {d.lower().replace("_", "-") for d in distributions.get(module, [module])}
        if not names & declared:
            missing[module] = sorted(names)
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


def test_makefile_installs_the_structured_extra_pins():
    extra = sorted(project()["optional-dependencies"]["structured"])
    makefile = (REPO / "Makefile").read_text()
    line = next(line for line in makefile.splitlines() if "--no-deps" in line and "pip install" in line)
    assert sorted(re.findall(r'"([^"]+==[^"]+)"', line)) == extra


def test_makefile_installs_the_triton_extra_pin_only_where_none_is_importable():
    (requirement,) = project()["optional-dependencies"]["triton"]
    pin, marker = (part.strip() for part in requirement.split(";"))
    assert "platform_machine == 'x86_64'" in marker and "sys_platform == 'linux'" in marker
    makefile = (REPO / "Makefile").read_text()
    line = next(line for line in makefile.splitlines() if "pip install" in line and "triton==" in line)
    assert re.findall(r'"(triton==[^"]+)"', line) == [pin]
    # A CUDA torch's own triton is never replaced, and only Linux x86_64 gets the wheel.
    assert 'import triton" 2>/dev/null ||' in line and '"Linux x86_64"' in line


def test_health_says_whether_constrained_decoding_is_installed(app_client):
    import importlib.util

    expected = importlib.util.find_spec("xgrammar") is not None
    assert app_client.get("/health").json()["constrained_decoding"] is expected


def test_a_built_wheel_carries_the_vnni_kernels_c_source(tmp_path):
    """hearth.kernels.model.vnni_linear compiles csrc/vnni_linear.c on first use, so `pip install .` must ship it."""
    import subprocess
    import zipfile

    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w",
                             str(tmp_path), str(REPO)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    (wheel,) = tmp_path.glob("hearth-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "hearth/kernels/model/csrc/vnni_linear.c" in names
    assert "hearth/kernels/model/csrc/avx512_math.h" in names  # the sources include it
