"""A real HTTP server (uvicorn on loopback) over the session's app, for what an in-process client cannot
show: a client that goes away."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from tests.conftest import free_port


@pytest.fixture(scope="session")
def live_url(app_client):
    import uvicorn

    port = free_port()
    # lifespan off: the app's engine loop already runs (app_client started it) and must outlive this server.
    server = uvicorn.Server(uvicorn.Config(app_client.app, host="127.0.0.1", port=port, lifespan="off",
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, name="live-http", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the live server did not start")
        time.sleep(0.05)
    yield url
    server.should_exit = True
    thread.join(timeout=10)


def wait_until_idle(url: str, timeout_s: float = 20.0) -> dict:
    """/health once no request is live and no KV block is used (or the last one seen at the timeout)."""
    deadline = time.monotonic() + timeout_s
    while True:
        health = httpx.get(url + "/health").json()
        if (health["num_requests"] == 0 and health["kv_blocks_used"] == 0) or time.monotonic() > deadline:
            return health
        time.sleep(0.05)


def spawn_server(*args: str, env: dict[str, str] | None = None):
    """`python -m server` on a free loopback port, once healthy: (process, url). Its output goes to a pipe."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "server", "--models", str(repo / "models.yaml"), "--port", str(port), *args],
        cwd=repo, env=dict(os.environ, PYTHONUNBUFFERED="1", **(env or {})),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"server exited early:\n{process.stdout.read()}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    process.kill()
    pytest.fail("server did not become healthy within 180 s")
