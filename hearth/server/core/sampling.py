"""The sampling fields the three APIs share, turned into the engine's SamplingParams in one place: the
model's defaults, logit_bias keys, stop strings, and range errors named as the request names the field."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hearth.engine.sampling.sampling_params import ParamError, SamplingParams
from hearth.server.errors import APIError

# Fields whose value, when the request leaves them out, comes from the model entry's defaults.
DEFAULTED = ("temperature", "top_p", "top_k", "min_p", "frequency_penalty", "presence_penalty", "repetition_penalty")
_FALLBACKS = {"temperature": 1.0, "top_p": 1.0, "top_k": 0, "min_p": 0.0, "frequency_penalty": 0.0,
              "presence_penalty": 0.0, "repetition_penalty": 1.0}


@dataclass(frozen=True)
class SamplingRequest:
    """A request's sampling fields as it gave them (None: left out), whatever its API calls them.

    names maps a SamplingParams field to the request's name for it (max_tokens is max_completion_tokens in
    chat, max_output_tokens in responses), so that a range error names what the client sent."""

    n: int | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    repetition_penalty: float | None = None
    logit_bias: Mapping[str, float] | None = None
    seed: int | None = None
    stop: str | tuple[str, ...] | list[str] | None = None
    min_tokens: int | None = None
    logprobs: bool = False
    top_logprobs: int | None = None
    names: Mapping[str, str] = field(default_factory=dict)

    def name(self, param: str) -> str:
        return self.names.get(param, param)


def token_bias(logit_bias: Mapping[str, float] | None, vocab_size: int, param: str = "logit_bias") -> dict[int, float]:
    """OpenAI's logit_bias (token ids as strings of digits) as token id -> bias."""
    bias = {}
    for key, value in (logit_bias or {}).items():
        # int() would also take ' 5', '+5' and '1_0'; a token id is digits only.
        if not key.isascii() or not key.isdigit():
            raise APIError(400, f"logit_bias keys must be token ids given as strings of integers, got {key!r}",
                           param=param)
        token_id = int(key)
        if not 0 <= token_id < vocab_size:
            raise APIError(400, f"logit_bias key {token_id} is not a token id of this model "
                           f"(vocab size {vocab_size})", param=param)
        bias[token_id] = value
    return bias


def sampling_params(req: SamplingRequest, defaults: Mapping[str, Any], vocab_size: int, **overrides: Any
                    ) -> SamplingParams:
    """The engine's parameters for `req`; overrides set SamplingParams fields the API decides itself."""
    values = {name: getattr(req, name) if getattr(req, name) is not None else defaults.get(name, _FALLBACKS[name])
              for name in DEFAULTED}
    stop = req.stop
    stop = (stop,) if isinstance(stop, str) else tuple(stop or ())
    fields = dict(
        n=req.n if req.n is not None else 1,
        max_tokens=req.max_tokens,
        logit_bias=token_bias(req.logit_bias, vocab_size, req.name("logit_bias")),
        seed=req.seed,
        stop=stop,
        min_tokens=req.min_tokens or 0,
        logprobs=req.logprobs,
        top_logprobs=req.top_logprobs or 0,
        **values,
    )
    fields.update(overrides)
    try:
        return SamplingParams(**fields)
    except ParamError as exc:
        param = req.name("stop" if exc.param == "stop_token_ids" else exc.param)
        raise APIError(400, str(exc).replace(exc.param, param, 1), param=param, code="invalid_value") from exc
