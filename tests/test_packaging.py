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


EXTRAS = ("structured", "triton", "sweep")


def declared_requirements() -> list[str]:
    """Every requirement of hearth's own code: the dependencies and the extras it imports."""
    return [*project()["dependencies"], *(r for extra in EXTRAS for r in project()["optional-dependencies"][extra])]


def locked_versions() -> dict[str, str]:
    text = (REPO / "requirements.lock").read_text()
    return {m.group(1).lower().replace("_", "-"): m.group(2)
            for m in re.finditer(r"^([A-Za-z0-9][\w.-]*)==([^\s;\\]+)", text, re.M)}


def test_every_imported_distribution_is_declared():
    declared = {name_of(r) for r in declared_requirements()}
    distributions = importlib.metadata.packages_distributions()
    missing = {}
    for module in imported_modules():
        names = {d.lower().replace("_", "-") for d in distributions.get(module, [module])}
        if not names & declared:
            missing[module] = sorted(names)
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


def test_every_declared_requirement_is_pinned_in_the_lock_within_its_range():
    """torch is the one exception: set-up keeps an importable torch, else installs torch==2.13.0."""
    from packaging.requirements import Requirement

    locked = locked_versions()
    problems = []
    for text in declared_requirements() + project()["optional-dependencies"]["dev"]:
        requirement = Requirement(text)
        name = requirement.name.lower().replace("_", "-")
        if name == "torch":
            assert requirement.specifier.contains("2.13.0"), text
            continue
        if name not in locked:
            problems.append(f"{name}: not in requirements.lock")
        elif not requirement.specifier.contains(locked[name], prereleases=True):
            problems.append(f"{name}=={locked[name]} is outside {text!r}")
    assert not problems, problems
    assert "torch" not in locked  # installed by the torch rule, never from the lock


def test_the_lock_pins_every_package_with_hashes():
    text = (REPO / "requirements.lock").read_text()
    entries = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 1)[1].strip())
    assert len(entries) == len(locked_versions()) > 20
    for entry in entries:
        assert "==" in entry.splitlines()[0] and "--hash=sha256:" in entry, entry[:200]


def test_the_environment_holds_the_locked_versions():
    """What set-up installed is the lock (a hand-installed upgrade shows here)."""
    skip_if_not_from_lock()
    wrong = {}
    for name, version in locked_versions().items():
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            if name == "triton":  # only on Linux x86_64
                continue
            wrong[name] = (version, None)
            continue
        # triton: an importable one (a CUDA torch's own) is kept rather than replaced.
        if installed != version and name != "triton":
            wrong[name] = (version, installed)
    assert not wrong, f"locked vs installed: {wrong}"


def skip_if_not_from_lock() -> None:
    if not Path(sys.prefix, ".installed").exists():
        pytest.skip("not the Makefile's venv")


def test_makefile_installs_the_lock_with_hashes_and_nothing_unpinned():
    makefile = (REPO / "Makefile").read_text()
    setup = makefile[makefile.index("$(STAMP):"):makefile.index("\nmodel:")]
    installs = [line.strip() for line in setup.splitlines() if "pip install" in line]
    assert any("--require-hashes --no-deps -r" in line for line in installs)
    assert any('--no-deps "torch==2.13.0"' in line and "import torch" not in line for line in installs)
    assert any("--no-deps --no-build-isolation -e ." in line for line in installs)
    # Every install in set-up resolves nothing: the lock decides every version.
    assert all("--no-deps" in line for line in installs), installs


def test_the_lock_holds_the_structured_extra_pins_the_makefile_locks():
    extra = sorted(project()["optional-dependencies"]["structured"])
    makefile = (REPO / "Makefile").read_text()
    line = next(line for line in makefile.splitlines() if "--no-deps" in line and "xgrammar==" in line)
    assert sorted(re.findall(r'"([^"]+==[^"]+)"', line)) == extra
    locked = locked_versions()
    assert sorted(f"{name_of(r)}=={locked[name_of(r)]}" for r in extra) == sorted(r.lower() for r in extra)


def test_the_lock_installs_triton_only_on_linux_x86_64_and_keeps_an_importable_one():
    (requirement,) = project()["optional-dependencies"]["triton"]
    pin, marker = (part.strip() for part in requirement.split(";"))
    lock_line = next(line for line in (REPO / "requirements.lock").read_text().splitlines()
                     if line.startswith("triton=="))
    assert lock_line.startswith(pin + " ;")
    assert "platform_machine == 'x86_64'" in lock_line and "sys_platform == 'linux'" in lock_line
    makefile = (REPO / "Makefile").read_text()
    # A CUDA torch's own triton is never replaced: the lock's entry is dropped when one is importable.
    assert 'import triton" 2>/dev/null' in makefile and "awk '/^triton==/" in makefile


def test_health_says_whether_constrained_decoding_is_installed(app_client):
    import importlib.util

    expected = importlib.util.find_spec("xgrammar") is not None
    assert app_client.get("/health").json()["constrained_decoding"] is expected
