"""A completion request -> its plan: the prompts as token ids, the engine's parameters for generating from
each (built by the shared sampling core, as chat's are) and for scoring each one's tokens (echo)."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from hearth.engine.sampling.sampling_params import SamplingParams
from hearth.server.chat.adapter import ChatAdapter
from hearth.server.completions.protocol import MAX_LOGPROBS, CompletionRequest
from hearth.server.core.sampling import SamplingRequest, sampling_params
from hearth.server.errors import APIError

# OpenAI's default for a completion's max_tokens (chat's is the context's end).
DEFAULT_MAX_TOKENS = 16


@dataclass(frozen=True)
class PromptPlan:
    token_ids: tuple[int, ...]
    # The prompt as echoed: the string the request gave, or its token ids decoded.
    text: str

    def __post_init__(self) -> None:
        if not self.token_ids:
            raise ValueError("a prompt has at least one token")


@dataclass(frozen=True)
class CompletionPlan:
    request_id: str
    created: int
    prompts: tuple[PromptPlan, ...]
    # Parameters of each prompt's generation (n = best_of choices); None when max_tokens is 0.
    params: SamplingParams | None
    # Choices returned per prompt: the best n of best_of, by cumulative logprob.
    n: int
    echo: bool
    # Alternatives per token in the legacy logprobs (None: no logprobs).
    logprobs: int | None
    is_stream: bool
    include_usage: bool

    def __post_init__(self) -> None:
        best_of = self.params.n if self.params is not None else self.n
        if not 1 <= self.n <= best_of:
            raise ValueError(f"n must be in [1, best_of={best_of}], got {self.n}")
        if self.logprobs is not None and not 0 <= self.logprobs <= MAX_LOGPROBS:
            raise ValueError(f"logprobs must be in [0, {MAX_LOGPROBS}], got {self.logprobs}")

    @property
    def best_of(self) -> int:
        return self.params.n if self.params is not None else self.n

    @property
    def scores_prompt(self) -> bool:
        """Echoed prompts with logprobs: each prompt's tokens are scored by the engine."""
        return self.echo and self.logprobs is not None

    def scoring_params(self) -> SamplingParams:
        return SamplingParams(temperature=0.0, logprobs=True, top_logprobs=self.logprobs or 0, ignore_eos=True,
                              is_scoring=True)


def plan_completion(adapter: ChatAdapter, req: CompletionRequest) -> CompletionPlan:
    adapter.check_model(req.model)
    if req.suffix:  # an empty suffix asks for nothing
        raise APIError(400, "suffix is not supported: this model completes text after the prompt only (no "
                       "fill-in-the-middle)", param="suffix", code="unsupported_parameter")
    if req.logprobs is not None and not 0 <= req.logprobs <= MAX_LOGPROBS:
        raise APIError(400, f"logprobs must be in [0, {MAX_LOGPROBS}], got {req.logprobs}", param="logprobs",
                       code="invalid_value")
    if req.max_tokens is not None and req.max_tokens < 0:
        raise APIError(400, f"max_tokens must be an integer >= 0, got {req.max_tokens}", param="max_tokens",
                       code="invalid_value")
    if req.stream_options is not None and not req.stream:
        raise APIError(400, "stream_options is only allowed when stream is true", param="stream_options")
    n = req.n if req.n is not None else 1
    best_of = req.best_of if req.best_of is not None else n
    if best_of < n:
        raise APIError(400, f"best_of must be greater than or equal to n ({n}), got {best_of}", param="best_of",
                       code="invalid_value")
    if best_of > n and req.stream:
        raise APIError(400, "best_of greater than n cannot be streamed: the best choices are known only at the "
                       "end", param="best_of")
    max_tokens = req.max_tokens if req.max_tokens is not None else DEFAULT_MAX_TOKENS
    fields = SamplingRequest(
        n=best_of, max_tokens=max_tokens or None, temperature=req.temperature, top_p=req.top_p, top_k=req.top_k,
        min_p=req.min_p, frequency_penalty=req.frequency_penalty, presence_penalty=req.presence_penalty,
        repetition_penalty=req.repetition_penalty, logit_bias=req.logit_bias, seed=req.seed, stop=req.stop,
        min_tokens=req.min_tokens, names={"n": "best_of" if req.best_of is not None else "n"},
        # Ranking best_of choices needs their logprobs, asked for or not.
        logprobs=req.logprobs is not None or best_of > n, top_logprobs=req.logprobs,
    )
    # The checks run with max_tokens 0 too (a range error is one whatever the length).
    params = sampling_params(fields, adapter.defaults, adapter.vocab_size)
    if n > params.n:
        raise APIError(400, f"n must be at most {params.n}", param="n")
    prompts = tuple(_prompts(adapter, req.prompt))
    for index, prompt in enumerate(prompts):
        wanted = len(prompt.token_ids) + max_tokens
        if wanted > adapter.max_model_len:
            raise APIError(
                400,
                f"This model's maximum context length is {adapter.max_model_len} tokens. However, you requested "
                f"{wanted} tokens ({len(prompt.token_ids)} in your prompt; {max_tokens} for the completion). "
                "Please reduce your prompt; or completion length.",
                param="prompt" if len(prompts) == 1 else f"prompt.{index}", code="context_length_exceeded",
            )
    return CompletionPlan(
        request_id=f"cmpl-{uuid.uuid4().hex}",
        created=int(time.time()),
        prompts=prompts,
        params=params if max_tokens else None,
        n=n,
        echo=bool(req.echo),
        logprobs=req.logprobs,
        is_stream=bool(req.stream),
        include_usage=bool(req.stream_options and req.stream_options.include_usage),
    )


def _prompts(adapter: ChatAdapter, prompt: str | list) -> list[PromptPlan]:
    """OpenAI's four prompt shapes: a string, strings, token ids, lists of token ids."""
    is_one = isinstance(prompt, str) or (bool(prompt) and all(isinstance(p, int) for p in prompt))
    if is_one:
        items, where = [prompt], ["prompt"]
    else:
        items, where = list(prompt), [f"prompt.{i}" for i in range(len(prompt))]
    if not items:
        raise APIError(400, "prompt must not be an empty list", param="prompt", code="invalid_value")
    plans = []
    for item, param in zip(items, where):
        if isinstance(item, str):
            ids = adapter.tokenizer(item).input_ids
            text = item
        else:
            ids = list(item)
            bad = next((t for t in ids if t >= adapter.vocab_size), None)
            if bad is not None:
                raise APIError(400, f"{param}: token id {bad} is not a token id of this model (vocab size "
                               f"{adapter.vocab_size})", param=param, code="invalid_value")
            text = adapter.tokenizer.decode(ids)
        if not ids:
            raise APIError(400, f"{param} must not be empty: the model needs at least one token to continue",
                           param=param, code="invalid_value")
        plans.append(PromptPlan(tuple(ids), text))
    return plans
