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


@pytest.fixture(scope="session")
def served_client():
    """The official openai client against `python -m hearth.server` on the default model, as served (its
    entry's weights), for the completions and responses tests."""
    from openai import OpenAI

    from tests.conftest import spawn_server

    process, url = spawn_server("--log-level", "warning")
    try:
        yield OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=120)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except Exception:
            process.kill()
