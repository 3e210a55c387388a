"""A sequence: one choice of a request, from its prompt to its finish."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from hearth.engine.output.detokenizer import IncrementalDetokenizer
from hearth.engine.sampling.sampling_params import SamplingParams


class SequenceStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


class FinishReason(str, enum.Enum):
    STOP = "stop"
    LENGTH = "length"
    ABORT = "abort"
    ERROR = "error"
    TOOL_CALLS = "tool_calls"


@dataclass
class TokenLogprobs:
    """Logprobs recorded for one generated token."""

    token_id: int
    logprob: float
    top: list[tuple[int, float]]


@dataclass
class Sequence:
    seq_id: int
    request_id: str
    choice_index: int
    prompt_token_ids: list[int]
    params: SamplingParams
    stream_key: int
    max_tokens: int
    detokenizer: IncrementalDetokenizer
    output_token_ids: list[int] = field(default_factory=list)
    status: SequenceStatus = SequenceStatus.WAITING
    # Tokens whose keys and values are in the KV cache.
    num_computed_tokens: int = 0
    block_table: list[int] = field(default_factory=list)
    # Hash chain of the sequence's first full blocks (hearth.engine.scheduling.prefix_cache), grown on demand.
    block_hashes: list[bytes] = field(default_factory=list)
    # Tokens [0, n) computed by full prefill chunks (or reused from the prefix cache): their full blocks
    # hold exactly the KV a later request computes for the same tokens, so they may be cached.
    num_cacheable_tokens: int = 0
    # Prompt tokens reused from the prefix cache at the first admission; None until admitted.
    num_cached_tokens: int | None = None
    # Row of the sampler's per-sequence device state (hearth.engine.sampling.sampling_state); None while unassigned.
    slot: int | None = None
    # Choices still to fork from this sequence when its prompt finishes prefill (n > 1).
    num_pending_forks: int = 0
    finish_reason: FinishReason | None = None
    error: str | None = None
    logprobs: list[TokenLogprobs] = field(default_factory=list)
    # Grammar matcher state when the request is constrained (hearth.engine.output.structured_output).
    matcher: object | None = None
    # A json_object answer whose closing tokens were forced to fit max_tokens.
    is_ending_forced: bool = False
    # A scored prompt (SamplingParams.is_scoring): its tokens after the first, each forced as the next output.
    forced_token_ids: list[int] = field(default_factory=list)

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_token_ids) + len(self.output_token_ids)

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.output_token_ids)

    @property
    def is_finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED

    @property
    def token_ids(self) -> list[int]:
        """Prompt then output (a new list when there is output)."""
        return self.prompt_token_ids + self.output_token_ids if self.output_token_ids else self.prompt_token_ids

    def token_at(self, index: int) -> int:
        num_prompt = len(self.prompt_token_ids)
        return self.prompt_token_ids[index] if index < num_prompt else self.output_token_ids[index - num_prompt]

    def tokens_between(self, start: int, end: int) -> list[int]:
        num_prompt = len(self.prompt_token_ids)
        if end <= num_prompt:
            return self.prompt_token_ids[start:end]
        if start >= num_prompt:
            return self.output_token_ids[start - num_prompt:end - num_prompt]
        return self.prompt_token_ids[start:] + self.output_token_ids[:end - num_prompt]
