"""POST /v1/responses in process: the response object and its items, the event stream, structured output
and tools through chat's plan, and a 400 naming the field for what a stateless server cannot honour."""

from __future__ import annotations

import json

import pytest

from hearth.server.responses.schemas import ResponseObject, ResponseStreamEvent
from tests.server.test_errors import assert_error

MODEL = "smollm2-135m-instruct"
TOOLS = [{"type": "function", "name": "get_weather", "description": "Current weather in a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}},
                         "required": ["city"], "additionalProperties": False}}]


def respond(client, **body):
    payload = {"model": MODEL, "input": "What is the capital of France?", "max_output_tokens": 12, "temperature": 0}
    payload.update(body)
    return client.post("/v1/responses", json=payload)


def answer(client, **body) -> ResponseObject:
    response = respond(client, **body)
    assert response.status_code == 200, response.text
    return ResponseObject.model_validate(response.json())


def events(client, **body) -> list[ResponseStreamEvent]:
    response = respond(client, stream=True, **body)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    lines = response.text.splitlines()
    names = [line.removeprefix("event: ") for line in lines if line.startswith("event: ")]
    data = [ResponseStreamEvent.model_validate(json.loads(line[6:])) for line in lines if line.startswith("data: ")]
    assert names == [e.type for e in data]
    assert [e.sequence_number for e in data] == list(range(len(data)))
    return data


def test_a_text_answer_is_one_message_with_its_usage(app_client):
    body = answer(app_client, max_output_tokens=40)
    assert body.status == "completed" and body.store is False and body.incomplete_details is None
    [message] = body.output
    assert message.type == "message" and message.status == "completed" and "Paris" in message.content[0].text
    assert body.usage.output_tokens > 0 and body.usage.total_tokens == body.usage.input_tokens + body.usage.output_tokens
    chat = app_client.post("/v1/chat/completions", json={
        "model": MODEL, "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "temperature": 0, "max_completion_tokens": 40}).json()
    assert message.content[0].text == chat["choices"][0]["message"]["content"]  # the same plan as chat's
    assert body.usage.input_tokens == chat["usage"]["prompt_tokens"]


def test_instructions_and_message_items_make_the_prompt(app_client):
    plain = answer(app_client)
    instructed = answer(app_client, instructions="Answer in French.")
    assert instructed.instructions == "Answer in French."
    chat = app_client.post("/v1/chat/completions", json={
        "model": MODEL, "temperature": 0, "max_completion_tokens": 12,
        "messages": [{"role": "system", "content": "Answer in French."},
                     {"role": "user", "content": "What is the capital of France?"}]}).json()
    assert instructed.usage.input_tokens == chat["usage"]["prompt_tokens"]  # instructions are the system message
    assert instructed.output[0].content[0].text == chat["choices"][0]["message"]["content"]
    as_items = answer(app_client, input=[{"role": "user", "content": [{"type": "input_text",
                                                                       "text": "What is the capital of France?"}]}])
    assert as_items.output[0].content[0].text == plain.output[0].content[0].text


def test_max_output_tokens_makes_the_response_incomplete(app_client):
    body = answer(app_client, input="Write a long story about a dragon.", max_output_tokens=5)
    assert body.status == "incomplete" and body.incomplete_details.reason == "max_output_tokens"
    assert body.output[0].status == "incomplete" and body.usage.output_tokens == 5


def test_the_stream_sends_the_responses_event_sequence(app_client):
    whole = answer(app_client, top_logprobs=2)
    data = events(app_client, top_logprobs=2)
    assert [e.type for e in data[:4]] == ["response.created", "response.in_progress", "response.output_item.added",
                                          "response.content_part.added"]
    deltas = [e for e in data if e.type == "response.output_text.delta"]
    assert deltas and [e.type for e in data[4:4 + len(deltas)]] == ["response.output_text.delta"] * len(deltas)
    assert [e.type for e in data[4 + len(deltas):]] == ["response.output_text.done", "response.content_part.done",
                                                        "response.output_item.done", "response.completed"]
    text = whole.output[0].content[0].text
    assert "".join(e.delta for e in deltas) == text == data[-1].response.output[0].content[0].text
    assert all(len(e.logprobs) >= 1 and len(e.logprobs[0].top_logprobs) == 2 for e in deltas)
    assert [lp.token for lp in whole.output[0].content[0].logprobs] == [lp.token for e in deltas for lp in e.logprobs]


def test_json_schema_output_follows_the_schema(app_client):
    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}}, "required": ["city"],
              "additionalProperties": False}
    body = answer(app_client, max_output_tokens=40,
                  text={"format": {"type": "json_schema", "name": "capital", "schema": schema, "strict": True}})
    assert set(json.loads(body.output[0].content[0].text)) == {"city"}
    assert body.text["format"]["name"] == "capital"
    as_object = answer(app_client, input="Give the capital of France as JSON.", max_output_tokens=40,
                       text={"format": {"type": "json_object"}})
    assert isinstance(json.loads(as_object.output[0].content[0].text), dict)


def test_a_function_call_round_trip(app_client):
    first = answer(app_client, input="What is the weather in Paris?", tools=TOOLS, tool_choice="required",
                   parallel_tool_calls=False, max_output_tokens=40)
    [call] = first.output
    assert call.type == "function_call" and call.name == "get_weather" and "city" in json.loads(call.arguments)
    data = events(app_client, input="What is the weather in Paris?", tools=TOOLS, tool_choice="required",
                  parallel_tool_calls=False, max_output_tokens=40)
    kinds = [e.type for e in data]
    assert kinds[2:] == ["response.output_item.added", "response.function_call_arguments.delta",
                         "response.function_call_arguments.done", "response.output_item.done", "response.completed"]
    assert data[3].delta == data[4].arguments == call.arguments
    history = [{"role": "user", "content": "What is the weather in Paris?"}, call.model_dump(),
               {"type": "function_call_output", "call_id": call.call_id, "output": '{"temperature_c": 21}'}]
    final = answer(app_client, input=history, tools=TOOLS, max_output_tokens=30)
    assert final.usage.input_tokens > first.usage.input_tokens and final.output
    # A call whose output is missing is refused as chat refuses it, named by its input item.
    assert_error(respond(app_client, input=history[:2], tools=TOOLS), 400, param="input.1")


@pytest.mark.parametrize("field, value, param", [
    ("store", True, "store"), ("background", True, "background"), ("previous_response_id", "resp_1", None),
    ("conversation", "conv_1", None), ("prompt", {"id": "pmpt_1"}, None), ("tools", [{"type": "web_search"}], "tools.0.type"),
    ("tools", [{"type": "file_search", "vector_store_ids": ["vs"]}], "tools.0.type"),
    ("tool_choice", {"type": "web_search_preview"}, None), ("reasoning", {"effort": "high"}, "reasoning.effort"),
    ("reasoning", {"summary": "auto"}, "reasoning.summary"), ("include", ["file_search_call.results"], "include.0"),
    ("truncation", "auto", None), ("text", {"verbosity": "low"}, "text.verbosity"),
    ("input", [{"type": "item_reference", "id": "msg_1"}], "input.0.type"),
    ("input", [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}], "input.0.content.0.type"),
    ("input", [{"type": "message", "role": "user", "content": 5}], "input.0.content"),
    ("temperature", 2.5, None), ("top_p", 0, None), ("top_logprobs", 21, None), ("max_output_tokens", 0, None),
    ("text", {"format": {"type": "json_schema", "name": "a b", "schema": {}}}, "text.format.name"),
    ("colour", "red", None), ("input", [], None),
])
def test_what_it_cannot_honour_is_a_400_naming_the_field(app_client, field, value, param):
    error = assert_error(respond(app_client, **{field: value}), 400)
    assert error["param"] == (param or field)


def test_errors_name_the_responses_fields(app_client):
    assert_error(respond(app_client, model="gpt-7"), 404, param="model", code="model_not_found")
    assert_error(respond(app_client, tool_choice="required"), 400, param="tool_choice")
    assert_error(respond(app_client, input="No format word here.", text={"format": {"type": "json_object"}}), 400,
                 param="input")
    assert_error(app_client.post("/v1/responses", json={"model": MODEL}), 400, param="input",
                 code="missing_required_parameter")
    assert respond(app_client).status_code == 200  # the engine still serves


def test_a_named_tool_choice_calls_that_function(app_client):
    tools = TOOLS + [{"type": "function", "name": "get_time", "description": "The time in a city",
                      "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}},
                                     "required": ["city"], "additionalProperties": False}}]
    body = answer(app_client, input="What is the weather in Paris?", tools=tools, max_output_tokens=40,
                  tool_choice={"type": "function", "name": "get_time"}, top_p=0.5)
    [call] = body.output
    assert call.type == "function_call" and call.name == "get_time" and "city" in json.loads(call.arguments)
    assert body.tool_choice == {"type": "function", "name": "get_time"} and body.top_p == 0.5
    error = assert_error(respond(app_client, tools=tools, tool_choice={"type": "function", "name": "nope"}), 400)
    assert error["param"].startswith("tool_choice") and "messages" not in error["message"]
