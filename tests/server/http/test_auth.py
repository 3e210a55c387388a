"""API keys: flags, HEARTH_API_KEY and a key file; Bearer checked on /v1/*; /health open; /metrics by flag."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from hearth.server.config import ServerConfig
from hearth.server.http.app import build_app
from hearth.server.http.auth import KeyChecker, load_api_keys

MODEL = "smollm2-135m-instruct"


def test_keys_come_from_flags_env_and_file(tmp_path):
    key_file = tmp_path / "keys"
    key_file.write_text("# team keys\nkey-c\n\n  key-d  \nkey-a\n")
    keys = load_api_keys(["key-a", "key-b"], {"HEARTH_API_KEY": "key-e"}, str(key_file))
    assert keys == ("key-a", "key-b", "key-e", "key-c", "key-d")
    assert load_api_keys([], {}, None) == ()
    with pytest.raises(OSError):
        load_api_keys([], {}, str(tmp_path / "missing"))


def test_checker_accepts_only_a_bearer_key():
    checker = KeyChecker(("k1", "k2"))
    assert checker.is_valid(b"Bearer k1") and checker.is_valid(b"bearer k2")
    for header in (None, b"", b"k1", b"Bearer", b"Bearer k3", b"Basic k1", b"Bearer k1x", b"Bearer k"):
        assert not checker.is_valid(header), header
    assert KeyChecker(()).is_valid(None)


@pytest.fixture(scope="module")
def keyed(default_engine, default_entry):
    # No lifespan: these requests are answered before the engine would be needed.
    return TestClient(build_app(default_engine, default_entry, config=ServerConfig(api_keys=("secret-1", "secret-2"))))


def assert_401(response):
    assert response.status_code == 401, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == "invalid_api_key"
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "secret-1"}])
def test_every_v1_route_needs_a_valid_key(keyed, headers):
    assert_401(keyed.get("/v1/models", headers=headers))
    assert_401(keyed.get(f"/v1/models/{MODEL}", headers=headers))
    assert_401(keyed.post("/v1/chat/completions", json={}, headers=headers))
    assert_401(keyed.get("/v1/no-such-route", headers=headers))


def test_a_valid_key_passes(keyed):
    for key in ("secret-1", "secret-2"):
        response = keyed.get("/v1/models", headers={"Authorization": f"Bearer {key}"})
        assert response.status_code == 200 and response.json()["data"][0]["id"] == MODEL
    # Past the key check, the request meets the usual validation.
    response = keyed.post("/v1/chat/completions", json={"model": "x"}, headers={"Authorization": "Bearer secret-1"})
    assert response.status_code == 400 and response.json()["error"]["param"] == "messages"


def test_health_and_metrics_stay_open_by_default(keyed):
    assert keyed.get("/health").status_code in (200, 503)  # open: the engine's state, never a 401
    assert keyed.get("/metrics").status_code == 200


def test_metrics_can_require_a_key(default_engine, default_entry):
    config = ServerConfig(api_keys=("secret",), metrics_require_key=True)
    client = TestClient(build_app(default_engine, default_entry, config=config))
    assert_401(client.get("/metrics"))
    assert client.get("/metrics", headers={"Authorization": "Bearer secret"}).status_code == 200
    assert client.get("/health").status_code != 401


def test_openapi_declares_the_bearer_scheme_when_keyed(keyed):
    schema = keyed.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
    assert schema["paths"]["/v1/chat/completions"]["post"]["security"] == [{"bearer": []}]
