"""response_format and tools on the default model: output that cannot come out malformed."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import jsonschema
import pytest

MODEL = "smollm2-135m-instruct"
PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 24}, "age": {"type": "integer", "minimum": 0, "maximum": 130},
                   "pets": {"type": "array", "items": {"type": "string", "maxLength": 12}, "maxItems": 3}},
    "required": ["name", "age"],
    "additionalProperties": False,
}
WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 40}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
    "required": ["city", "unit"],
    "additionalProperties": False,
}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city",
                                      "parameters": WEATHER}},
    {"type": "function", "function": {"name": "get_time", "description": "Current time in a timezone",
                                      "parameters": {"type": "object", "properties": {"tz": {"type": "string", "maxLength": 30}},
                                                     "required": ["tz"], "additionalProperties": False}}},
]
ASK_WEATHER = [{"role": "user", "content": "What is the weather like in Paris today?"}]


def post(client, **body):
    response = client.post("/v1/chat/completions", json={"model": MODEL, **body})
    return response.status_code, response.json()


def run_all(client, bodies):
    with ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(lambda body: post(client, **body), bodies))


def sampling_settings():
    return [{"temperature": 0}] + [{"temperature": 1.0, "seed": seed} for seed in range(2)]


def test_json_schema_output_always_validates(app_client):
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}}
    bodies = [{"messages": [{"role": "user", "content": "Describe a person."}], "response_format": fmt,
               "max_completion_tokens": 200, **s} for s in sampling_settings()]
    for status, body in run_all(app_client, bodies):
        assert status == 200, body
        choice = body["choices"][0]
        assert choice["finish_reason"] == "stop"
        jsonschema.validate(json.loads(choice["message"]["content"]), PERSON)


def test_json_object_output_is_always_one_object(app_client):
    """Even when the model rambles to the end of max_tokens: the object is closed within the budget (and
    then reported as finish_reason 'length')."""
    bodies = [{"messages": [{"role": "user", "content": "Give me a small JSON object about a cat."}],
               "response_format": {"type": "json_object"}, "max_completion_tokens": 60, **s}
              for s in sampling_settings()]
    reasons = []
    for status, body in run_all(app_client, bodies):
        assert status == 200, body
        choice = body["choices"][0]
        reasons.append(choice["finish_reason"])
        assert isinstance(json.loads(choice["message"]["content"]), dict)
        assert body["usage"]["completion_tokens"] <= 60
    assert set(reasons) <= {"stop", "length"}


def test_n_choices_with_json_schema_each_validate(app_client):
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}}
    status, body = post(app_client, messages=[{"role": "user", "content": "Describe a person."}], response_format=fmt,
                        n=2, temperature=1.0, seed=7, max_completion_tokens=200)
    assert status == 200
    objects = [json.loads(c["message"]["content"]) for c in body["choices"]]
    for obj in objects:
        jsonschema.validate(obj, PERSON)
    assert len(objects) == 2


@pytest.mark.parametrize(("tool_choice", "is_parallel"), [
    ("required", True), ("required", False), ({"type": "function", "function": {"name": "get_time"}}, True)])
def test_required_and_named_tool_choice_always_yield_valid_calls(app_client, tool_choice, is_parallel):
    bodies = [{"messages": ASK_WEATHER, "tools": TOOLS, "tool_choice": tool_choice, "max_completion_tokens": 150,
               "parallel_tool_calls": is_parallel, **s} for s in sampling_settings()]
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
    for status, body in run_all(app_client, bodies):
        assert status == 200, body
        choice = body["choices"][0]
        if choice["finish_reason"] == "length":
            # Parallel calls are unbounded: a model may keep calling until max tokens. The calls it completed
            # are still returned, and the cut one is not.
            assert tool_choice == "required" and is_parallel
            assert body["usage"]["completion_tokens"] == 150
        else:
            assert choice["finish_reason"] == "tool_calls"
        assert choice["message"]["content"] is None
        calls = choice["message"]["tool_calls"]
        assert calls
        if not is_parallel:
            assert len(calls) == 1
        for call in calls:
            assert call["type"] == "function" and call["id"].startswith("call_")
            if isinstance(tool_choice, dict):
                assert call["function"]["name"] == "get_time"
            jsonschema.validate(json.loads(call["function"]["arguments"]), schemas[call["function"]["name"]])


def test_parallel_tool_calls_false_gives_one_call(app_client):
    status, body = post(app_client, messages=ASK_WEATHER, tools=TOOLS, tool_choice="required",
                        parallel_tool_calls=False, temperature=0, max_completion_tokens=150)
    assert status == 200
    assert len(body["choices"][0]["message"]["tool_calls"]) == 1


def test_deprecated_functions_answer_with_function_call(app_client):
    status, body = post(app_client, messages=ASK_WEATHER, functions=[TOOLS[0]["function"]],
                        function_call={"name": "get_weather"}, temperature=0, max_completion_tokens=150)
    assert status == 200
    choice = body["choices"][0]
    assert choice["finish_reason"] == "function_call"
    assert choice["message"]["function_call"]["name"] == "get_weather"
    jsonschema.validate(json.loads(choice["message"]["function_call"]["arguments"]), WEATHER)
    assert "tool_calls" not in choice["message"]


def test_streamed_tool_call_reassembles_to_the_non_streamed_one(app_client):
    body = {"model": MODEL, "messages": ASK_WEATHER, "tools": TOOLS, "tool_choice": "required", "temperature": 0,
            "max_completion_tokens": 150}
    plain = app_client.post("/v1/chat/completions", json=body).json()["choices"][0]["message"]["tool_calls"]
    streamed = app_client.post("/v1/chat/completions", json={**body, "stream": True})
    calls: dict[int, dict] = {}
    finish = None
    for line in streamed.text.splitlines():
        if not line.startswith("data: {"):
            continue
        for choice in json.loads(line[6:])["choices"]:
            finish = choice["finish_reason"] or finish
            for delta in choice["delta"].get("tool_calls", []):
                call = calls.setdefault(delta["index"], {"name": "", "arguments": ""})
                call["name"] += delta.get("function", {}).get("name") or ""
                call["arguments"] += delta.get("function", {}).get("arguments") or ""
    assert finish == "tool_calls"
    assert [calls[i] for i in sorted(calls)] == [
        {"name": c["function"]["name"], "arguments": c["function"]["arguments"]} for c in plain]


def test_auto_tool_choice_parses_calls_from_the_text(app_client, default_engine, monkeypatch):
    from hearth.server.chat.tool_calls import parse_tool_calls

    text = 'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo", "unit": "celsius"}}\n</tool_call>'
    content, calls = parse_tool_calls(text, "hermes", {"get_weather"})
    assert content == "Let me check." and calls[0].name == "get_weather"
    assert json.loads(calls[0].arguments) == {"city": "Oslo", "unit": "celsius"}
    # A call to an unknown function is dropped: call markup never reaches content.
    assert parse_tool_calls(text, "hermes", {"other"}) == ("Let me check.", [])
    status, body = post(app_client, messages=ASK_WEATHER, tools=TOOLS, temperature=0, max_completion_tokens=20)
    assert status == 200 and body["choices"][0]["finish_reason"] in ("stop", "length", "tool_calls")


@pytest.mark.parametrize("fmt, param", [
    ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "foo"}}}, "response_format"),
    ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"$ref": "#/$defs/missing"}}}, "response_format"),
    ({"type": "json_schema", "json_schema": {"name": "x"}}, "response_format"),
])
def test_invalid_schema_is_400_naming_what_is_wrong(app_client, fmt, param):
    status, body = post(app_client, messages=[{"role": "user", "content": "json please"}], response_format=fmt)
    assert status == 400
    assert body["error"]["param"] == param and body["error"]["message"]


def test_invalid_tool_parameters_schema_is_400(app_client):
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "foo"}}}]
    status, body = post(app_client, messages=ASK_WEATHER, tools=tools, tool_choice="required")
    assert status == 400 and body["error"]["param"] == "tools"


@pytest.mark.parametrize("body, param", [
    ({"tool_choice": "auto"}, "tool_choice"),
    ({"parallel_tool_calls": True}, "parallel_tool_calls"),
    ({"function_call": "auto"}, "function_call"),
    ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
    ({"tools": TOOLS, "functions": [TOOLS[0]["function"]]}, "functions"),
    ({"tools": TOOLS, "tool_choice": "required", "response_format": {"type": "json_object"}}, "response_format"),
])
def test_inconsistent_tool_fields_are_400(app_client, body, param):
    status, response = post(app_client, messages=ASK_WEATHER, **body)
    assert status == 400 and response["error"]["param"] == param


def test_json_object_needs_the_word_json_like_openai(app_client):
    status, body = post(app_client, messages=ASK_WEATHER, response_format={"type": "json_object"})
    assert status == 400 and body["error"]["param"] == "messages"


def test_tool_round_trip_renders_calls_and_results(app_client):
    first = post(app_client, messages=ASK_WEATHER, tools=TOOLS, tool_choice="required", parallel_tool_calls=False,
                 temperature=0, max_completion_tokens=150)[1]["choices"][0]["message"]
    call = first["tool_calls"][0]
    messages = ASK_WEATHER + [
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": '{"temperature": 21, "sky": "clear"}'},
    ]
    status, body = post(app_client, messages=messages, tools=TOOLS, tool_choice="none", temperature=0,
                        max_completion_tokens=40)
    assert status == 200
    answer = body["choices"][0]
    assert answer["message"]["content"] and "tool_calls" not in answer["message"]
    assert body["usage"]["prompt_tokens"] > 60  # the call and its result are in the prompt
