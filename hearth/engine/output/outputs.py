"""What the engine reports each step: per request, what each choice added."""

from __future__ import annotations

from dataclasses import dataclass, field

from hearth.engine.scheduling.sequence import TokenLogprobs


@dataclass
class ChoiceDelta:
    index: int
    # Text released this step (stop-string look-ahead may hold some back until a later step).
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprobs] = field(default_factory=list)
    finish_reason: str | None = None


@dataclass
class RequestOutput:
    request_id: str
    choices: list[ChoiceDelta]
    num_prompt_tokens: int
    # Tokens generated so far over all choices.
    num_completion_tokens: int
    is_finished: bool
    error: str | None = None
    # Prompt tokens whose KV came from the prefix cache (OpenAI's usage.prompt_tokens_details.cached_tokens).
    num_cached_tokens: int = 0
    # time.monotonic() when the request was first scheduled (its queue time ends there).
    first_scheduled_time: float | None = None
