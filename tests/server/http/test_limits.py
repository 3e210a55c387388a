"""Admission (429 with Retry-After beyond --max-waiting-requests) and the body limit (413 before parsing)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from hearth.server.config import ServerConfig
from hearth.server.errors import APIError
from hearth.server.http.admission import Admission
from hearth.server.http.app import build_app

CHAT = {"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 1}


def test_admission_counts_planning_and_queued_requests():
    queued = {"n": 0}
    admission = Admission(3, lambda: queued["n"])
    with admission.planning(), admission.planning():
        assert admission.num_waiting == 2
        queued["n"] = 1
        with pytest.raises(APIError) as info:
            admission.planning().__enter__()
    assert info.value.status == 429 and info.value.headers["Retry-After"].isdigit()
    assert admission.num_waiting == 1  # both planning blocks ended; the engine holds one
    with admission.planning():
        pass


@pytest.fixture(scope="module")
def limited(default_engine, default_entry):
    app = build_app(default_engine, default_entry, config=ServerConfig(max_waiting_requests=4, max_request_bytes=4096))
    return TestClient(app)


def test_full_queue_is_429_with_retry_after(limited, monkeypatch):
    monkeypatch.setattr(limited.app.state.admission, "_num_queued", lambda: 4)
    response = limited.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 429
    assert int(response.headers["retry-after"]) >= 1
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == "rate_limit_exceeded"
    assert 'hearth_requests_total{status="429"}' in limited.get("/metrics").text


def test_body_over_the_limit_is_413_before_parsing(limited):
    big = b'{"model": "' + b"x" * 5000 + b'"}'
    response = limited.post("/v1/chat/completions", content=big, headers={"content-type": "application/json"})
    assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"
    # Not JSON at all: still 413, as the body is never parsed.
    response = limited.post("/v1/chat/completions", content=b"\xff" * 5000)
    assert response.status_code == 413


def test_chunked_body_over_the_limit_is_413(limited):
    def chunks():
        yield b'{"model": "'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"}'

    response = limited.post("/v1/chat/completions", content=chunks(), headers={"content-type": "application/json"})
    assert "content-length" not in response.request.headers
    assert response.status_code == 413


def test_body_within_the_limit_reaches_validation(limited):
    response = limited.post("/v1/chat/completions", json={"model": "m" * 3000})
    assert response.status_code == 400 and response.json()["error"]["param"] == "messages"


@pytest.mark.parametrize("field, value", [
    ("max_waiting_requests", 0), ("max_request_bytes", 10), ("shutdown_timeout_s", -1), ("api_keys", ("",)),
    ("api_keys", (" padded",)),
])
def test_server_config_names_the_bad_field(field, value):
    with pytest.raises(ValueError, match=field.split("_s")[0] if field != "api_keys" else r"api_keys\[0\]"):
        ServerConfig(**{field: value})
    with pytest.raises(ValueError, match="metrics_require_key"):
        ServerConfig(metrics_require_key=True)
