"""Per-batch sampling metadata: tensors with one row per sequence being sampled.

The engine builds this from each request's parameters (Python scalars); the kernels see only this type.
A stage whose tensors are None is skipped for the whole batch. Rows that do not use an active stage carry
its neutral value (bias 0, penalty 0 or 1, top_p 1, top_k = vocab_size, min_p 0).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass(frozen=True)
class SamplingMetadata:
    # [num_seqs] float32; greedy rows carry 1.0 so that no stage divides by zero.
    temperature: Tensor
    # [num_seqs] bool: temperature 0, i.e. argmax with ties to the lowest id.
    is_greedy: Tensor
    has_greedy: bool
    is_all_greedy: bool
    # Some random row has a temperature other than 1.
    has_temperature_scaling: bool
    # [num_seqs] int64: the row's stream key, from (seed, choice index); unseeded requests get a fresh one.
    stream_keys: Tensor
    # [num_seqs] int64: index within its choice of the token being drawn (0 for the first output token).
    positions: Tensor

    # logit_bias: [num_seqs, num_biased] token ids and float32 values; padding adds 0.0 to id 0.
    bias_token_ids: Tensor | None = None
    bias_values: Tensor | None = None

    # Allowed-token bitmask (constrained decoding): [num_seqs, ceil(vocab / 32)] int32, bit set = allowed.
    # Rows without a constraint have every bit set.
    allowed_token_bitmask: Tensor | None = None
    # min_tokens: [num_seqs, num_banned] token ids banned (-inf) this step; rows pad by repeating an id
    # they ban, or with id 0 and is_banned False.
    banned_token_ids: Tensor | None = None
    is_banned: Tensor | None = None

    # frequency / presence penalties over the choice's output so far. output_token_ids [num_seqs, L]
    # lists each row's output tokens (padding repeats one of the row's own ids); output_token_counts
    # [num_seqs, L] int32 is the count of that id in the row's output.
    frequency_penalty: Tensor | None = None
    presence_penalty: Tensor | None = None
    output_token_ids: Tensor | None = None
    output_token_counts: Tensor | None = None

    # repetition_penalty over prompt + output: [num_seqs] float32 and seen ids [num_seqs, S]
    # (padding repeats one of the row's own ids).
    repetition_penalty: Tensor | None = None
    seen_token_ids: Tensor | None = None

    # Truncation, applied in this order after temperature. top_k [num_seqs] int64 (vocab_size = off),
    # top_p [num_seqs] float32 in (0, 1], min_p [num_seqs] float32 in [0, 1).
    top_k: Tensor | None = None
    top_p: Tensor | None = None
    min_p: Tensor | None = None
    # Every row is random and truncates (lets the sampler skip the whole-vocabulary draw).
    is_all_truncated: bool = False
    # Some random row needs its whole tempered distribution: it does not truncate, or it truncates by
    # top_p without top_k (the top_p base is the row's total mass). False lets the sampler skip the
    # full softmax; True is always correct.
    needs_total_mass: bool = True

    # Logprobs: how many top alternatives to return (the batch maximum, 0..20; rows asking fewer slice),
    # whether any row wants logprobs at all, and which distribution they describe.
    num_top_logprobs: int = 0
    has_logprobs: bool = False
    is_logprobs_processed: bool = False

    @property
    def num_seqs(self) -> int:
        return self.temperature.shape[0]

    @property
    def has_truncation(self) -> bool:
        return self.top_k is not None or self.top_p is not None or self.min_p is not None


@dataclass(frozen=True)
class SamplerOutput:
    # [num_seqs] int64: the chosen token of each row.
    token_ids: Tensor
    # [num_seqs] float32 logprob of the chosen token, and [num_seqs, num_top_logprobs] top alternatives
    # (ids int64, logprobs float32, sorted descending); None when no row asked for logprobs.
    logprobs: Tensor | None = None
    top_token_ids: Tensor | None = None
    top_logprobs: Tensor | None = None
