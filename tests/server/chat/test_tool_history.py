"""Tool calls and their results pair up in a request's history, or it is a 400 naming the message (OpenAI's
rule), before anything reaches the model."""

from __future__ import annotations

import pytest

from tests.server.test_errors import assert_error, chat

CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
ASK = {"role": "user", "content": "Weather in Paris?"}
CALLED = {"role": "assistant", "content": None, "tool_calls": [CALL]}
ANSWER = {"role": "tool", "tool_call_id": "call_1", "content": "18 C, sunny"}


@pytest.mark.parametrize("messages, param", [
    ([ASK, CALLED, {"role": "user", "content": "And?"}], "messages.1.tool_calls"),  # unanswered, then a user turn
    ([ASK, CALLED], "messages.1.tool_calls"),  # unanswered at the end
    ([ASK, {**CALLED, "tool_calls": [CALL, {**CALL, "id": "call_2"}]}, ANSWER], "messages.1.tool_calls"),
    ([ASK, ANSWER], "messages.1.tool_call_id"),  # a result with no call
    ([ASK, CALLED, ANSWER, ANSWER], "messages.3.tool_call_id"),  # answered twice
    ([ASK, {**CALLED, "tool_calls": [{**CALL, "function": {"name": "get_weather", "arguments": "{city: Paris"}}]},
      ANSWER], "messages.1.tool_calls.0.function.arguments"),
])
def test_unpaired_tool_calls_and_invalid_arguments_are_400_naming_the_message(app_client, messages, param):
    error = assert_error(chat(app_client, messages=messages), 400, param=param)
    assert "messages." in error["message"] or "tool_call" in error["message"]


def test_a_paired_history_is_answered(app_client):
    messages = [ASK, {**CALLED, "tool_calls": [CALL, {**CALL, "id": "call_2"}]}, ANSWER,
                {**ANSWER, "tool_call_id": "call_2"}]
    response = chat(app_client, messages=messages)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["role"] == "assistant"
