"""/v1/responses through the official openai client against the served model: text, the streamed events, a
function-call round trip and json_schema output, as the client's own types read them."""

from __future__ import annotations

import json

import pytest

MODEL = "smollm2-135m-instruct"
TOOLS = [{"type": "function", "name": "get_weather", "description": "Current weather in a city", "strict": True,
          "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}},
                         "required": ["city"], "additionalProperties": False}}]


def test_a_text_response(served_client):
    response = served_client.responses.create(model=MODEL, input="What is the capital of France?", temperature=0,
                                              max_output_tokens=40)
    assert response.status == "completed" and "Paris" in response.output_text
    assert response.usage.output_tokens > 0 and response.output[0].type == "message"


def test_streamed_events_build_the_same_text(served_client):
    whole = served_client.responses.create(model=MODEL, input="What is the capital of France?", temperature=0,
                                           max_output_tokens=40)
    stream = served_client.responses.create(model=MODEL, input="What is the capital of France?", temperature=0,
                                            max_output_tokens=40, stream=True)
    events = list(stream)
    kinds = [e.type for e in events]
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          "response.completed"]
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == whole.output_text == events[-1].response.output_text


def test_a_function_call_round_trip(served_client):
    question = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = served_client.responses.create(model=MODEL, input=question, tools=TOOLS, tool_choice="required",
                                           parallel_tool_calls=False, temperature=0, max_output_tokens=60)
    [call] = first.output
    assert call.type == "function_call" and call.name == "get_weather"
    assert "city" in json.loads(call.arguments)
    history = question + [call.model_dump(exclude_none=True),
                          {"type": "function_call_output", "call_id": call.call_id,
                           "output": '{"temperature_c": 21, "sky": "clear"}'}]
    final = served_client.responses.create(model=MODEL, input=history, tools=TOOLS, temperature=0,
                                           max_output_tokens=60)
    assert final.output and final.usage.input_tokens > first.usage.input_tokens


def test_json_schema_output(served_client):
    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20},
                                               "country": {"type": "string", "maxLength": 20}},
              "required": ["city", "country"], "additionalProperties": False}
    response = served_client.responses.create(
        model=MODEL, input="Name the capital of France and its country.", temperature=0, max_output_tokens=60,
        text={"format": {"type": "json_schema", "name": "capital", "schema": schema, "strict": True}})
    assert set(json.loads(response.output_text)) == {"city", "country"}


def test_what_it_cannot_honour_reaches_the_client_as_a_400(served_client):
    import openai

    for fields, param in [({"store": True}, "store"), ({"previous_response_id": "resp_1"}, "previous_response_id"),
                          ({"background": True}, "background"), ({"tools": [{"type": "web_search"}]}, "tools.0.type"),
                          ({"reasoning": {"effort": "high"}}, "reasoning.effort")]:
        with pytest.raises(openai.BadRequestError) as info:
            served_client.responses.create(model=MODEL, input="Hi", **fields)
        assert info.value.param == param
