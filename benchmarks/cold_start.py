"""A server's cold start: launch to its first answer, and what it wrote to disk on the way (bench_serving --gguf).

Alone, without the throughput runs (hearth, then llama-server's binary, alternating, --rounds times per file):

    .venv/bin/python benchmarks/cold_start.py FILE.gguf [FILE.gguf ...] [--rounds 3] [--compare-llama-server]
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
from server_process import ROOT, free_port, machine, served_model, stop

HEARTH_CACHE = Path(os.environ.get("HEARTH_CACHE", Path.home() / ".cache" / "hearth"))


def file_sizes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in folder.rglob("*") if p.is_file()}


def write_bytes(pid: int) -> int:
    """The process's write_bytes from /proc/PID/io (bytes it caused to be written to storage); -1 if unreadable."""
    with contextlib.suppress(OSError, StopIteration, ValueError), open(f"/proc/{pid}/io") as f:
        return int(next(ln for ln in f if ln.startswith("write_bytes:")).split()[1])
    return -1


def cold_start(name: str, cmd: list[str], port: int, env: dict[str, str], cache: Path | None) -> dict:
    """Launch `cmd`, time to the first answer of a 1-token chat request; the bytes it wrote under `cache`."""
    before = file_sizes(cache) if cache else {}
    log_path = ROOT / "benchmarks" / "out" / f"{name}-cold.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **env}
    start = time.monotonic()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        model = None
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited ({proc.returncode}) before its first answer; see {log_path}")
            with contextlib.suppress(httpx.HTTPError, ValueError, KeyError, IndexError):
                if model is None and httpx.get(f"{base}/health", timeout=2, trust_env=False).is_success:
                    model = served_model(f"{base}/v1")
                if model is not None:
                    r = httpx.post(f"{base}/v1/chat/completions", timeout=60, trust_env=False, json={
                        "model": model, "max_tokens": 1, "messages": [{"role": "user", "content": "Hi"}]})
                    if r.is_success:
                        break
            if time.monotonic() - start > 300:
                raise RuntimeError(f"{name}: no answer after 300 s; see {log_path}")
            time.sleep(0.05)
        seconds = time.monotonic() - start
        io = write_bytes(proc.pid)
    finally:
        stop(proc)
    after = file_sizes(cache) if cache else {}
    changed = {k: v for k, v in after.items() if before.get(k) != v}
    return {"seconds": seconds, "written": sum(changed.values()), "files": changed, "io": io}


def fresh_cache(hearth_cache: Path = HEARTH_CACHE) -> Path:
    """A temp HEARTH_CACHE holding only the real cache's compiled kernels (what `make setup` builds): a newly
    downloaded file's first start. (A CPU start measures no row tiling, so there is none to copy.)"""
    folder = Path(tempfile.mkdtemp(prefix="hearth-cold-"))
    if (hearth_cache / "kernels").is_dir():
        shutil.copytree(hearth_cache / "kernels", folder / "kernels")
    return folder


def llama_server_command(script: Path, port: int, gguf: Path) -> list[str]:
    """llama_server.sh's serve command for `gguf`, resolved before the clock starts: the binary itself is
    timed, not the script's level probe (a Python that imports torch)."""
    out = subprocess.run(["bash", str(script), "command", str(port)], check=True, capture_output=True, text=True,
                         env={**os.environ, "LLAMA_SERVER_GGUF": str(gguf)}).stdout
    return out.splitlines()


def main() -> None:
    import argparse
    import statistics
    import sys

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("gguf", type=Path, nargs="+")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--compare-llama-server", action="store_true")
    args = p.parse_args()
    script = ROOT / "benchmarks" / "peers" / "llama_server.sh"
    print(machine(), flush=True)
    for path in args.gguf:
        path = path.resolve()
        hearth, llama, written = [], [], []
        for _ in range(args.rounds):
            cache, port = fresh_cache(), free_port()
            try:
                cold = cold_start(f"hearth-{path.stem}", [sys.executable, "-m", "hearth.server", "--model", str(path),
                                                          "--port", str(port)], port, {"HEARTH_CACHE": str(cache)}, cache)
            finally:
                shutil.rmtree(cache, ignore_errors=True)
            hearth.append(cold["seconds"])
            written.append(cold["written"])
            if args.compare_llama_server:
                port = free_port()
                llama.append(cold_start(f"llama-server-{path.stem}", llama_server_command(script, port, path), port,
                                        {}, None)["seconds"])
        size = path.stat().st_size
        line = (f"{path.name}: hearth cold start {' '.join(f'{s:.2f}' for s in hearth)} s (median "
                f"{statistics.median(hearth):.2f}), wrote {max(written)} B = {100 * max(written) / size:.3f}% of the file")
        if llama:
            line += (f"; llama-server {' '.join(f'{s:.2f}' for s in llama)} s (median {statistics.median(llama):.2f}); "
                     f"ratio {statistics.median(hearth) / statistics.median(llama):.2f}")
        print(line, flush=True)


if __name__ == "__main__":
    main()
