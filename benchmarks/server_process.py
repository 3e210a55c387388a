"""Servers under benchmark as child processes: a free port, a launched server that is ready before the
block runs and stopped after it, and the machine's description for the tables."""

from __future__ import annotations

import contextlib
import os
import platform
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def launched(name: str, cmd: list[str], port: int, timeout: float = 300.0):
    """Run server `cmd` (127.0.0.1:port) until the block ends; its output goes to benchmarks/out/name.log."""
    log_path = ROOT / "benchmarks" / "out" / f"{name}.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
           "HF_HUB_DISABLE_UPDATE_CHECK": "1"}  # offline, and no PyPI version check by the `transformers` CLI
    print(f"[{name}] starting: {' '.join(cmd)}  (log: {log_path})", flush=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited ({proc.returncode}) before it was ready; see {log_path}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2, trust_env=False).is_success:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} not ready after {timeout:.0f} s; see {log_path}")
            time.sleep(0.5)
        yield proc
    finally:
        if proc.poll() is None:
            stop(proc)


def stop(proc: subprocess.Popen) -> None:
    """SIGINT (a graceful drain), then a kill after 20 s."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def served_model(url: str) -> str:
    """The first model a server lists at /v1/models."""
    return httpx.get(f"{url}/models", timeout=10, trust_env=False).json()["data"][0]["id"]


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    cores = f"{os.cpu_count()} logical cores, {len(os.sched_getaffinity(0))} usable"
    return f"{cpu}, {cores}; {platform.platform()}"
