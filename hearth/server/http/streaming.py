"""Server-sent events for streamed chat completions (chat.completion.chunk objects, then [DONE])."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from hearth.engine.output.outputs import RequestOutput
from hearth.server.async_engine import EngineDeadError
from hearth.server.chat.adapter import ChatAdapter, ChatPlan
from hearth.server.chat.tool_calls import StreamingToolParser, ToolCall
from hearth.server.errors import APIError


def _call_deltas(plan: ChatPlan, calls: list[ToolCall], first_index: int) -> dict[str, Any]:
    """OpenAI's streamed tool-call delta: each call whole in one entry (id, type, name, arguments)."""
    if not calls:
        return {}
    if plan.tools.is_legacy_functions:
        return {"function_call": {"name": calls[0].name, "arguments": calls[0].arguments}}
    return {"tool_calls": [{"index": first_index + i, **call.openai()} for i, call in enumerate(calls)]}


def _event(body: dict[str, Any]) -> str:
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


async def stream_chat(adapter: ChatAdapter, plan: ChatPlan, outputs: AsyncIterator[RequestOutput]) -> AsyncIterator[str]:
    """The first chunk of each choice carries the role; the last one its finish_reason; with
    stream_options.include_usage a final chunk with no choices carries the usage."""
    n = plan.params.n
    num_prompt = len(plan.prompt_token_ids)
    num_completion = num_cached = 0
    parsers = [StreamingToolParser(plan.tools.call_format, plan.tools.names) for _ in range(n)] \
        if plan.parses_tool_calls else None
    num_calls = [0] * n
    has_started = [False] * n
    yield _event(adapter.chunk(plan, [
        {"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
        for i in range(n)
    ]))
    has_started = [True] * n
    try:
        async for output in outputs:
            if output.error is not None:
                yield APIError(500, output.error).sse()
                return
            num_completion, num_cached = output.num_completion_tokens, output.num_cached_tokens
            choices = []
            for delta in output.choices:
                if not (delta.text or delta.finish_reason or delta.logprobs):
                    continue
                logprobs = None
                if plan.params.logprobs:
                    logprobs = {"content": adapter.logprobs_content(delta.logprobs), "refusal": None}
                body: dict[str, Any] = {"index": delta.index, "delta": {}, "logprobs": logprobs,
                                        "finish_reason": delta.finish_reason}
                text, calls = delta.text, []
                if parsers is not None:
                    text, calls = parsers[delta.index].feed(delta.text, is_final=delta.finish_reason is not None)
                    calls = calls[:max(0, 1 - num_calls[delta.index])] if not plan.tools.is_parallel else calls
                    body["delta"].update(_call_deltas(plan, calls, num_calls[delta.index]))
                    num_calls[delta.index] += len(calls)
                    if delta.finish_reason == "stop" and num_calls[delta.index]:
                        body["finish_reason"] = "function_call" if plan.tools.is_legacy_functions else "tool_calls"
                if text:
                    body["delta"]["content"] = text
                if body["delta"] or body["finish_reason"] or body["logprobs"]:
                    choices.append(body)
            if choices:
                yield _event(adapter.chunk(plan, choices))
    except APIError as exc:
        yield exc.sse()
        return
    except EngineDeadError as exc:  # shutdown ended the request, or the engine stopped
        yield APIError(503, str(exc), code="server_shutting_down").sse()
        return
    except Exception as exc:  # the request failed inside the engine; the stream says so and ends
        yield APIError(500, f"internal error: {exc}").sse()
        return
    assert all(has_started)
    if plan.include_usage:
        yield _event(adapter.chunk(plan, [], usage=adapter.usage(num_prompt, num_completion, num_cached)))
    yield "data: [DONE]\n\n"
