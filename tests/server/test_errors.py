"""Bad input gets a 4xx in OpenAI's error shape; an engine failure is a 500 and the server keeps serving."""

import threading

import pytest

from hearth.engine.llm_engine import LLMEngine

MODEL = "smollm2-135m-instruct"


def chat(client, **body):
    payload = {"model": MODEL, "messages": [{"role": "user", "content": "Say hi."}], "max_completion_tokens": 4}
    payload.update(body)
    return client.post("/v1/chat/completions", json=payload)


def assert_error(response, status, param=None, code=None):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if param is not None:
        assert error["param"] == param
    if code is not None:
        assert error["code"] == code
    return error


def test_malformed_json_is_400(app_client):
    response = app_client.post("/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert_error(response, 400, code="invalid_json")


def test_schema_violation_is_400_not_422(app_client):
    assert_error(chat(app_client, temperature="hot"), 400, param="temperature")
    assert_error(chat(app_client, messages=[]), 400, param="messages")
    assert_error(chat(app_client, colour="red"), 400, param="colour", code="unrecognized_argument")
    assert_error(app_client.post("/v1/chat/completions", json={"messages": []}), 400)


@pytest.mark.parametrize("field, value", [
    ("temperature", 2.5), ("temperature", -0.1), ("top_p", 0.0), ("top_p", 1.5), ("frequency_penalty", 2.1),
    ("presence_penalty", -3), ("n", 0), ("top_logprobs", 21), ("max_completion_tokens", 0),
    ("top_k", -1), ("min_p", 1.5), ("repetition_penalty", 0.0), ("min_tokens", -1),
])
def test_out_of_range_values_name_the_field(app_client, field, value):
    error = assert_error(chat(app_client, **{field: value, "logprobs": field == "top_logprobs"}), 400, param=field)
    assert field in error["message"]


def test_logit_bias_validation(app_client):
    assert_error(chat(app_client, logit_bias={"abc": 1}), 400, param="logit_bias")
    assert_error(chat(app_client, logit_bias={"99999999": 1}), 400, param="logit_bias")
    assert_error(chat(app_client, logit_bias={"5": 101}), 400, param="logit_bias")


def test_top_logprobs_requires_logprobs(app_client):
    assert_error(chat(app_client, top_logprobs=3), 400, param="top_logprobs")


def test_stop_validation(app_client):
    assert_error(chat(app_client, stop=["a", "b", "c", "d", "e"]), 400, param="stop")
    assert_error(chat(app_client, stop=""), 400, param="stop")


def test_stream_options_need_stream(app_client):
    assert_error(chat(app_client, stream_options={"include_usage": True}), 400, param="stream_options")


def test_unknown_model_is_404(app_client):
    assert_error(chat(app_client, model="gpt-7"), 404, param="model", code="model_not_found")


def test_context_length_exceeded(app_client, default_engine):
    too_many = default_engine.max_model_len
    assert_error(chat(app_client, max_completion_tokens=too_many), 400, code="context_length_exceeded")
    long_text = "word " * (default_engine.max_model_len + 10)
    response = chat(app_client, messages=[{"role": "user", "content": long_text}])
    assert_error(response, 400, code="context_length_exceeded")


def test_image_content_is_rejected(app_client):
    message = {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}
    assert_error(chat(app_client, messages=[message]), 400, param="messages.0.content.0.type")


def test_unknown_route_is_404_in_shape(app_client):
    assert_error(app_client.get("/v1/nothing"), 404)


def test_engine_failure_is_500_and_server_keeps_serving(app_client, monkeypatch):
    original = LLMEngine._append
    failing: set[str] = set()

    def flaky(self, seq, *args, **kwargs):
        if seq.request_id in failing or (seq.params.seed == 666):
            failing.add(seq.request_id)
            raise RuntimeError("injected failure")
        return original(self, seq, *args, **kwargs)

    monkeypatch.setattr(LLMEngine, "_append", flaky)
    results = {}

    def good():
        results["good"] = chat(app_client, max_completion_tokens=16, temperature=0)

    thread = threading.Thread(target=good)
    thread.start()
    bad = chat(app_client, seed=666, max_completion_tokens=16)
    thread.join()
    assert_error(bad, 500)
    assert "injected failure" in bad.json()["error"]["message"]
    assert results["good"].status_code == 200
    monkeypatch.setattr(LLMEngine, "_append", original)
    assert chat(app_client).status_code == 200
    assert app_client.get("/health").json()["status"] == "ok"


def test_step_failure_fails_its_requests_only(app_client, default_engine, monkeypatch):
    calls = {"n": 0}
    original = default_engine.runner.execute

    def broken_once(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("injected step failure")
        return original(*args, **kwargs)

    monkeypatch.setattr(default_engine.runner, "execute", broken_once)
    assert_error(chat(app_client), 500)
    monkeypatch.undo()
    assert chat(app_client).status_code == 200


def test_empty_body_names_the_missing_field(app_client):
    for content in (b"", b"null"):
        response = app_client.post("/v1/chat/completions", content=content, headers={"content-type": "application/json"})
        error = assert_error(response, 400, param="messages", code="missing_required_parameter")
        assert "'messages'" in error["message"]
    for content in (b"[]", b"5"):
        response = app_client.post("/v1/chat/completions", content=content, headers={"content-type": "application/json"})
        assert "None" not in assert_error(response, 400)["message"]


@pytest.mark.parametrize("field, value", [
    ("seed", 2**70), ("seed", -(2**63) - 1), ("top_k", 2**70), ("n", 2**64), ("max_completion_tokens", 2**63),
])
def test_integers_outside_int64_are_400_naming_the_field(app_client, field, value):
    assert_error(chat(app_client, **{field: value}), 400, param=field)


def test_int64_seed_bounds_are_accepted(app_client):
    for seed in (2**63 - 1, -(2**63)):
        assert chat(app_client, seed=seed, max_completion_tokens=1).status_code == 200


@pytest.mark.parametrize("key", ["1_0", " 5", "+5", "-1", "٣"])
def test_logit_bias_keys_must_be_plain_token_ids(app_client, key):
    assert_error(chat(app_client, logit_bias={key: 1}), 400, param="logit_bias")


@pytest.mark.parametrize("body, param", [
    ({"messages": [{"role": "user", "content": "Hi.", "extra_field": 1}]}, "messages.0.extra_field"),
    ({"messages": [{"role": "assistant", "content": 3}]}, "messages.0.content"),
    ({"response_format": {"type": "json_schema", "json_schema": {"schema": {}}}}, "response_format.json_schema.name"),
    ({"tools": [{"type": "function", "function": {"name": "f", "colour": 1}}]}, "tools.0.function.colour"),
])
def test_nested_fields_are_named_by_their_request_path_without_union_tags(app_client, body, param):
    assert_error(chat(app_client, **body), 400, param=param)
