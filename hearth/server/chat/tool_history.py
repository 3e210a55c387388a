"""A conversation's tool calls and their results must pair up, as OpenAI requires: every call of an
assistant message is answered by a `tool` message with its id before the next message of another role, a
`tool` message answers a call that was made, and a call's `arguments` is JSON. Otherwise 400, naming the
message, before anything is rendered."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from hearth.server.errors import APIError


def check_tool_history(messages: Sequence[Any]) -> None:
    pending: dict[str, int] = {}  # call id -> index of the assistant message that made it
    for index, message in enumerate(messages):
        if message.role == "tool":
            if message.tool_call_id not in pending:
                raise APIError(400, f"messages.{index}: a message with role 'tool' must answer a tool call of a "
                               f"preceding assistant message; no pending call has id {message.tool_call_id!r}",
                               param=f"messages.{index}.tool_call_id")
            del pending[message.tool_call_id]
            continue
        _refuse_unanswered(pending)
        if message.role == "assistant":
            for call_index, call in enumerate(message.tool_calls or []):
                _check_arguments(call.function.arguments, f"messages.{index}.tool_calls.{call_index}.function.arguments")
                if call.id in pending:
                    raise APIError(400, f"messages.{index}: tool call id {call.id!r} is used twice",
                                   param=f"messages.{index}.tool_calls.{call_index}.id")
                pending[call.id] = index
            if message.function_call is not None:
                _check_arguments(message.function_call.arguments, f"messages.{index}.function_call.arguments")
    _refuse_unanswered(pending)


def _refuse_unanswered(pending: dict[str, int]) -> None:
    if pending:
        index = min(pending.values())
        ids = ", ".join(call_id for call_id, at in pending.items() if at == index)
        raise APIError(400, f"An assistant message with 'tool_calls' must be followed by tool messages responding "
                       f"to each 'tool_call_id'. The following tool_call_ids did not have response messages: {ids}",
                       param=f"messages.{index}.tool_calls")


def _check_arguments(arguments: str, param: str) -> None:
    try:
        json.loads(arguments)
    except ValueError as exc:
        raise APIError(400, f"{param} must be a JSON string: {exc}", param=param) from exc
