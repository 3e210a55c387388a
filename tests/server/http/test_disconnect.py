"""A client that goes away, streaming or not, has its request aborted and its KV blocks freed."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.server.conftest import wait_until_idle

LONG = {"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "Write a very long story."}],
        "max_completion_tokens": 3000, "seed": 1, "temperature": 1.0}


def test_non_streaming_client_that_times_out_is_aborted(live_url, app_client):
    before = httpx.get(live_url + "/health").json()
    assert before["num_requests"] == 0
    with pytest.raises(httpx.ReadTimeout):
        # 3000 tokens take minutes here; the client gives up after 1.5 s, as a client with a timeout does.
        httpx.post(live_url + "/v1/chat/completions", json=LONG, timeout=httpx.Timeout(30, read=1.5))
    gone = time.monotonic()
    health = wait_until_idle(live_url)
    assert health["num_requests"] == 0 and health["kv_blocks_used"] == 0, health
    # Freed long before the 3000 tokens could have been generated.
    assert health["steps"] - before["steps"] < 3000
    metrics = httpx.get(live_url + "/metrics").text
    assert 'hearth_requests_total{status="499"}' in metrics
    assert time.monotonic() - gone < 20


def test_streaming_client_that_disconnects_is_aborted(live_url):
    with httpx.Client(timeout=60) as http, \
            http.stream("POST", live_url + "/v1/chat/completions", json=dict(LONG, stream=True)) as response:
        lines = response.iter_lines()
        received = [next(lines) for _ in range(6)]
        assert any(line.startswith("data: ") for line in received)
        assert httpx.get(live_url + "/health").json()["kv_blocks_used"] > 0
    health = wait_until_idle(live_url)
    assert health["num_requests"] == 0 and health["kv_blocks_used"] == 0, health


@pytest.mark.parametrize("path, body", [
    ("/v1/completions", {"prompt": ["Once upon a time", "In a land far away"], "echo": True, "logprobs": 1,
                         "seed": 1}),
    # The Responses API has no seed: greedy, which runs this model to max_output_tokens, keeps the request
    # alive past the client's timeout (a sampled story can end within it).
    ("/v1/responses", {"input": "Write a very long story.", "temperature": 0.0}),
])
def test_a_client_that_goes_away_frees_every_engine_request(live_url, path, body):
    length = "max_tokens" if path == "/v1/completions" else "max_output_tokens"
    payload = {"model": "smollm2-135m-instruct", length: 3000, "temperature": 1.0, **body}
    with httpx.Client(timeout=60) as http:
        with http.stream("POST", live_url + path, json=dict(payload, stream=True)) as response:
            assert response.status_code == 200
            lines = response.iter_lines()
            assert any(next(lines).startswith("data: ") for _ in range(8))
            assert httpx.get(live_url + "/health").json()["num_requests"] >= 1
        health = wait_until_idle(live_url)
        assert health["num_requests"] == 0 and health["kv_blocks_used"] == 0, health
        with pytest.raises(httpx.ReadTimeout):
            http.post(live_url + path, json=payload, timeout=httpx.Timeout(30, read=1.5))
    health = wait_until_idle(live_url)
    assert health["num_requests"] == 0 and health["kv_blocks_used"] == 0, health
