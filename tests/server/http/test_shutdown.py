"""Graceful shutdown of a real `python -m hearth.server`: on a signal new requests get 503, requests in flight
finish, those still running when the wait ends end with a clean error, and the process exits 0 without a
traceback. Auth is on, so the keyed path is exercised end to end too.

The wait is ended by a second signal rather than by --shutdown-timeout running out (the same path in
hearth.server.http.shutdown), so no assertion depends on how fast this machine generates."""

from __future__ import annotations

import json
import signal
import threading
import time

import httpx

from tests.conftest import spawn_server

KEY = "test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
SHUTDOWN_TIMEOUT_S = 600
# Short requests finish while draining; long ones are still running when the second signal comes.
SHORT, LONG = 8, 6000


def body(max_tokens: int, stream: bool) -> dict:
    return {"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "Tell me a long story."}],
            "max_completion_tokens": max_tokens, "stream": stream, "seed": 3, "temperature": 1.0}


def run_request(url: str, max_tokens: int, stream: bool, results: dict, name: str) -> None:
    try:
        with httpx.Client(timeout=120) as http:
            if not stream:
                response = http.post(url + "/v1/chat/completions", json=body(max_tokens, False), headers=AUTH)
                results[name] = (response.status_code, response.json())
                return
            with http.stream("POST", url + "/v1/chat/completions", json=body(max_tokens, True), headers=AUTH) as response:
                events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
            results[name] = (response.status_code, events)
    except Exception as exc:  # recorded: a request that failed at the transport level fails the test
        results[name] = ("exception", repr(exc))


def test_signal_drains_in_flight_requests_then_exits_cleanly():
    process, url = spawn_server("--api-key", KEY, "--shutdown-timeout", str(SHUTDOWN_TIMEOUT_S), "--log-level", "warning")
    try:
        assert httpx.get(url + "/v1/models").status_code == 401
        assert httpx.get(url + "/v1/models", headers=AUTH).status_code == 200
        results: dict = {}
        plan = {"short": (SHORT, False), "short_stream": (SHORT, True), "long": (LONG, False), "long_stream": (LONG, True)}
        threads = [threading.Thread(target=run_request, args=(url, tokens, stream, results, name))
                   for name, (tokens, stream) in plan.items()]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 60
        while httpx.get(url + "/health").json()["num_requests"] < len(plan) and time.monotonic() < deadline:
            time.sleep(0.02)
        process.send_signal(signal.SIGINT)
        time.sleep(0.5)
        refused = httpx.post(url + "/v1/chat/completions", json=body(4, False), headers=AUTH)
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "server_shutting_down"
        assert httpx.get(url + "/health").status_code == 503
        for name in ("short", "short_stream"):
            threads[list(plan).index(name)].join(timeout=120)
        assert "long" not in results and "long_stream" not in results
        process.send_signal(signal.SIGTERM)  # stop waiting: the long requests end now
        for thread in threads:
            thread.join(timeout=60)
        assert not any(thread.is_alive() for thread in threads), "a request hung"
        output = process.communicate(timeout=60)[0]
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output
    assert "Traceback" not in output, output

    status, answer = results["short"]
    assert status == 200 and answer["choices"][0]["finish_reason"] == "length", answer
    status, events = results["short_stream"]
    assert status == 200 and events[-1] == "[DONE]", events
    status, answer = results["long"]
    assert status == 503 and answer["error"]["code"] == "server_shutting_down", answer
    status, events = results["long_stream"]
    assert status == 200 and events[-1] != "[DONE]"
    assert json.loads(events[-1])["error"]["code"] == "server_shutting_down", events[-1]


def test_the_wait_ends_at_the_timeout_or_a_second_signal(monkeypatch):
    from hearth.server.http.shutdown import Shutdown

    clock = {"now": 100.0}
    monkeypatch.setattr(time, "monotonic", lambda: clock["now"])
    shutdown = Shutdown(30.0)
    assert not shutdown.is_draining and not shutdown.is_expired
    shutdown.begin()
    clock["now"] += 29.9
    assert shutdown.is_draining and not shutdown.is_expired
    clock["now"] += 0.2
    assert shutdown.is_expired
    again = Shutdown(30.0)
    again.begin()
    again.begin()
    assert again.is_expired
