"""The install a new release cannot break: hearth beside Hugging Face's `kernels`, and a wheel that serves.

transformers 5.25 imports Hugging Face's `kernels` distribution when a model loads; a top-level package of
ours with that name shadowed it whenever the repository root was on sys.path.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[1]
SIDE_BY_SIDE = """
import sys, kernels, hearth.kernels, transformers.integrations.hub_kernels
from kernels import CUDAProperties
from hearth.kernels import Sampler
print(kernels.__file__); print(hearth.kernels.__file__)
"""


@pytest.mark.parametrize("where", ["repository root", "elsewhere"])
def test_hugging_faces_kernels_and_hearth_import_side_by_side(where, tmp_path):
    pytest.importorskip("kernels")
    cwd = REPO if where == "repository root" else tmp_path
    # `python -c` puts the working directory first on sys.path, as `python -m` and pytest's rootdir do.
    result = subprocess.run([sys.executable, "-c", SIDE_BY_SIDE], cwd=cwd, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    hf_file, ours = map(Path, result.stdout.split())
    assert REPO / "kernels" not in hf_file.parents and "site-packages" in hf_file.parts
    assert ours.parent == REPO / "hearth" / "kernels" or "site-packages" in ours.parts


def test_the_repository_installs_no_top_level_module_but_hearth(tmp_path):
    wheel = build_wheel(tmp_path)
    tops = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert {top for top in tops if not top.endswith((".dist-info", ".data"))} == {"hearth"}
    names = zipfile.ZipFile(wheel).namelist()
    assert "hearth/kernels/model/csrc/vnni_linear.c" in names
    assert {"hearth/kernels/model/csrc/simd.h", "hearth/kernels/model/csrc/simd_avx2.h",
            "hearth/kernels/model/csrc/simd_avx512.h"} <= set(names)  # the sources include them
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "hearth = hearth.cli:main" in entry_points


def build_wheel(folder: Path) -> Path:
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w",
                             str(folder), str(REPO)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    (wheel,) = folder.glob("hearth-*.whl")
    return wheel


@pytest.mark.slow
def test_a_wheel_in_a_fresh_venv_serves_a_request_with_hearth_serve(tmp_path, default_entry):
    """The wheel alone, away from the repository: its `hearth serve` answers a chat request. Its dependencies
    are this environment's (a .pth names its site-packages; the editable hearth there stays unseen, since
    .pth files in a directory named by a .pth are not read)."""
    import httpx

    wheel = build_wheel(tmp_path / "wheel")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    ours = [p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]
    Path(site, "hearth-test-deps.pth").write_text("\n".join(ours) + "\n")
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                              "--no-index", str(wheel)], capture_output=True, text=True, timeout=300)
    if install.returncode != 0 and "no such option: --python" in install.stderr:
        pytest.skip("pip too old for --python")
    assert install.returncode == 0, install.stderr[-2000:]
    where = subprocess.run([str(python), "-c", "import hearth; print(hearth.__file__)"], cwd=tmp_path,
                           capture_output=True, text=True, check=True).stdout.strip()
    assert Path(where).is_relative_to(venv), where

    port = free_port()
    log = tmp_path / "serve.log"
    with open(log, "w") as out:
        process = subprocess.Popen([str(venv / "bin" / "hearth"), "serve", "--model", str(default_entry.path),
                                    "--port", str(port)], cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT,
                                   env=dict(os.environ, PYTHONUNBUFFERED="1"))
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert process.poll() is None, log.read_text()[-3000:]
            try:
                health = httpx.get(f"{url}/health", timeout=2)
                if health.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            raise AssertionError(f"not healthy: {log.read_text()[-3000:]}")
        assert {f["name"] for f in health.json()["kernels"]["families"]}
        reply = httpx.post(f"{url}/v1/chat/completions", timeout=120, json={
            "model": httpx.get(f"{url}/v1/models", timeout=10).json()["data"][0]["id"], "messages": [{"role": "user", "content": "What is the capital of France?"}],
            "temperature": 0, "max_tokens": 8})
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert body["choices"][0]["message"]["content"].strip(), json.dumps(body)
        assert "kernels: CPU level:" in log.read_text()
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
