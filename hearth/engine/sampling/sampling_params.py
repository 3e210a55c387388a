"""Per-request sampling parameters: Python scalars, validated once when the request arrives."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MAX_TOP_LOGPROBS = 20
MAX_STOP_STRINGS = 4
MAX_N = 128


class ParamError(ValueError):
    """A parameter out of its allowed range; `param` names it."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


def _check_range(name: str, value: float, low: float, high: float, *, low_open: bool = False) -> None:
    ok = (low < value if low_open else low <= value) and value <= high
    if not ok:
        bracket = "(" if low_open else "["
        raise ParamError(name.split("[")[0], f"{name} must be in {bracket}{low}, {high}], got {value}")


@dataclass(frozen=True)
class SamplingParams:
    """What to generate for one request; every field has OpenAI's meaning.

    temperature 0 is greedy. top_k 0 disables top_k. min_p, top_k, repetition_penalty and min_tokens
    are documented extensions (off by default). stream keys for `seed` are derived per choice.

    is_scoring: the request generates nothing; each prompt token after the first is reported as an output
    token with its logprob (and top_logprobs alternatives) under the model's raw distribution given the
    tokens before it, as /v1/completions' echo needs. Only greedy, n 1, logprobs on and no stops go with it.
    """

    n: int = 1
    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    repetition_penalty: float = 1.0
    logit_bias: dict[int, float] = field(default_factory=dict)
    seed: int | None = None
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    min_tokens: int = 0
    ignore_eos: bool = False
    logprobs: bool = False
    top_logprobs: int = 0
    # A compiled grammar constraint (hearth.engine.output.structured_output); None when output is unconstrained.
    constraint: Any = None
    is_scoring: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.n, int) or not 1 <= self.n <= MAX_N:
            raise ParamError("n", f"n must be an integer in [1, {MAX_N}], got {self.n}")
        if self.max_tokens is not None and (not isinstance(self.max_tokens, int) or self.max_tokens < 1):
            raise ParamError("max_tokens", f"max_tokens must be an integer >= 1, got {self.max_tokens}")
        _check_range("temperature", self.temperature, 0.0, 2.0)
        _check_range("top_p", self.top_p, 0.0, 1.0, low_open=True)
        if not isinstance(self.top_k, int) or self.top_k < 0:
            raise ParamError("top_k", f"top_k must be an integer >= 0 (0 disables it), got {self.top_k}")
        _check_range("min_p", self.min_p, 0.0, 1.0)
        _check_range("frequency_penalty", self.frequency_penalty, -2.0, 2.0)
        _check_range("presence_penalty", self.presence_penalty, -2.0, 2.0)
        _check_range("repetition_penalty", self.repetition_penalty, 0.0, 2.0, low_open=True)
        for token_id, bias in self.logit_bias.items():
            if not isinstance(token_id, int) or token_id < 0:
                raise ParamError("logit_bias", f"logit_bias keys must be token ids >= 0, got {token_id!r}")
            _check_range(f"logit_bias[{token_id}]", bias, -100.0, 100.0)
        if self.seed is not None and not isinstance(self.seed, int):
            raise ParamError("seed", f"seed must be an integer, got {self.seed!r}")
        if len(self.stop) > MAX_STOP_STRINGS:
            raise ParamError("stop", f"stop may hold at most {MAX_STOP_STRINGS} strings, got {len(self.stop)}")
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise ParamError("stop", f"stop strings must be non-empty strings, got {list(self.stop)!r}")
        if not isinstance(self.min_tokens, int) or self.min_tokens < 0:
            raise ParamError("min_tokens", f"min_tokens must be an integer >= 0, got {self.min_tokens}")
        if self.max_tokens is not None and self.min_tokens > self.max_tokens:
            raise ParamError("min_tokens", f"min_tokens must be <= max_tokens ({self.max_tokens}), got {self.min_tokens}")
        if not isinstance(self.top_logprobs, int) or not 0 <= self.top_logprobs <= MAX_TOP_LOGPROBS:
            raise ParamError("top_logprobs", f"top_logprobs must be an integer in [0, {MAX_TOP_LOGPROBS}], got {self.top_logprobs}")
        if self.top_logprobs and not self.logprobs:
            raise ParamError("top_logprobs", "top_logprobs requires logprobs to be true")
        if self.is_scoring:
            self._check_scoring()

    def _check_scoring(self) -> None:
        """A scored prompt's tokens are forced: nothing that changes or ends what is generated goes with it."""
        if not self.logprobs:
            raise ParamError("logprobs", "is_scoring reports logprobs: logprobs must be true")
        for name, value, neutral in (("n", self.n, 1), ("max_tokens", self.max_tokens, None),
                                     ("temperature", self.temperature, 0.0), ("stop", self.stop, ()),
                                     ("stop_token_ids", self.stop_token_ids, ()), ("min_tokens", self.min_tokens, 0),
                                     ("constraint", self.constraint, None), ("ignore_eos", self.ignore_eos, True)):
            if value != neutral:
                raise ParamError(name, f"is_scoring needs {name}={neutral!r}, got {value!r}")

    @property
    def is_greedy(self) -> bool:
        return self.temperature == 0.0

    def validate_for_vocab(self, vocab_size: int) -> None:
        """Checks that need the model: token ids within its vocabulary."""
        for token_id in self.logit_bias:
            if token_id >= vocab_size:
                raise ParamError("logit_bias", f"logit_bias key {token_id} is not a token id of this model (vocab size {vocab_size})")
        for token_id in self.stop_token_ids:
            if not 0 <= token_id < vocab_size:
                raise ParamError("stop_token_ids", f"stop_token_ids entry {token_id} is not a token id (vocab size {vocab_size})")
