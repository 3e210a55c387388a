"""Server-sent events for streamed chat completions (chat.completion.chunk objects, then [DONE])."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from engine.outputs import RequestOutput
from server.adapter import ChatAdapter, ChatPlan
from server.errors import APIError


def _event(body: dict[str, Any]) -> str:
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


async def stream_chat(adapter: ChatAdapter, plan: ChatPlan, outputs: AsyncIterator[RequestOutput]) -> AsyncIterator[str]:
    """The first chunk of each choice carries the role; the last one its finish_reason; with
    stream_options.include_usage a final chunk with no choices carries the usage."""
    n = plan.params.n
    num_prompt = len(plan.prompt_token_ids)
    num_completion = 0
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
            num_completion = output.num_completion_tokens
            choices = []
            for delta in output.choices:
                if not (delta.text or delta.finish_reason or delta.logprobs):
                    continue
                logprobs = None
                if plan.params.logprobs:
                    logprobs = {"content": adapter.logprobs_content(delta.logprobs), "refusal": None}
                body: dict[str, Any] = {"index": delta.index, "delta": {}, "logprobs": logprobs,
                                        "finish_reason": delta.finish_reason}
                if delta.text:
                    body["delta"]["content"] = delta.text
                choices.append(body)
            if choices:
                yield _event(adapter.chunk(plan, choices))
    except APIError as exc:
        yield exc.sse()
        return
    except Exception as exc:  # the request failed inside the engine; the stream says so and ends
        yield APIError(500, f"internal error: {exc}").sse()
        return
    assert all(has_started)
    if plan.include_usage:
        yield _event(adapter.chunk(plan, [], usage=adapter.usage(num_prompt, num_completion)))
    yield "data: [DONE]\n\n"
