"""Pydantic schema of the legacy completion request (POST /v1/completions) and of its answers.

The request names every field of OpenAI's CreateCompletionRequest; unknown fields are rejected. top_k,
min_p, repetition_penalty and min_tokens are the same documented extensions as chat's.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

from hearth.server.chat.protocol import Int64, SamplingExtensions, StreamOptions
from hearth.server.chat.responses import Usage

# OpenAI's legacy logprobs: the chosen token and up to 5 alternatives.
MAX_LOGPROBS = 5

TokenId = Annotated[int, Field(ge=0, le=2**31 - 1)]


class CompletionRequest(SamplingExtensions):
    model: str
    prompt: str | list[str] | list[TokenId] | list[list[TokenId]]
    best_of: Int64 | None = None
    echo: bool | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    logprobs: Int64 | None = None
    max_tokens: Int64 | None = None
    n: Int64 | None = None
    presence_penalty: float | None = None
    seed: Int64 | None = None
    stop: str | list[str] | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    suffix: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    user: str | None = None


# ---- answers (they document the OpenAPI responses; the server builds the bodies as dicts) --------------

class CompletionLogprobs(BaseModel):
    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: Literal["stop", "length"] | None


class Completion(BaseModel):
    """The answer; with `stream: true` each server-sent event's data is one of these holding what each
    choice added (its last one the finish_reason), then `data: [DONE]`."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None

