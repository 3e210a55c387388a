"""The sampler: one batched pass from logits to next tokens and their logprobs."""

from __future__ import annotations

import torch
from torch import Tensor

from kernels.blockwise import argmax_blockwise
from kernels.logit_bias import apply_logit_bias
from kernels.logprobs import LogprobStats, apply_kept_prefix, logprob_stats, token_logprobs
from kernels.metadata import SamplerOutput, SamplingMetadata
from kernels.penalties import apply_frequency_presence_penalties, apply_repetition_penalty
from kernels.sampling import (
    apply_temperature,
    block_cumulative_mass,
    draw_from_candidates,
    draw_from_probs,
    stream_uniforms,
)
from kernels.token_mask import apply_banned_tokens, apply_token_bitmask
from kernels.truncation import INITIAL_CANDIDATES, is_truncated, select_candidates


class Sampler:
    """logits [num_seqs, vocab] + SamplingMetadata -> SamplerOutput, every row with its own parameters.

    Pipeline, in order (a stage no row uses is skipped for the whole batch):
      1. raw logprob statistics: log_softmax of the unmodified logits (when raw logprobs are asked for)
      2. logit_bias: add the row's sparse bias
      3. token masks: the constrained-decoding bitmask and min_tokens bans set logits to -inf
      4. penalties: repetition (prompt + output), then frequency and presence (output so far)
      5. greedy rows: argmax of the processed logits, ties to the lowest id
      6. temperature: divide the other rows by their temperature
      7. softmax, then truncation: top_k, top_p (over the top_k survivors), min_p
      8. draw: inverse CDF of the kept distribution at one uniform per row, a pure function of
         (stream key, position)
      9. logprobs: of the chosen token and the top alternatives, raw (stage 1) or processed
         (the distribution of stages 2-7; for greedy rows, stages 2-4)
    """

    def __init__(self, initial_candidates: int = INITIAL_CANDIDATES) -> None:
        self.initial_candidates = initial_candidates

    def __call__(self, logits: Tensor, md: SamplingMetadata) -> SamplerOutput:
        # The stages work in place on this copy; the caller's logits stay untouched.
        logits = logits.to(torch.float32, copy=True)
        wants_raw = md.has_logprobs and not md.is_logprobs_processed
        raw_logits = logits
        raw_stats = logprob_stats(logits, torch.softmax(logits, dim=1), md.num_top_logprobs) if wants_raw else None
        if wants_raw and self._has_processing(md):
            logits = logits.clone()

        if md.bias_token_ids is not None:
            logits = apply_logit_bias(logits, md.bias_token_ids, md.bias_values)
        if md.allowed_token_bitmask is not None:
            logits = apply_token_bitmask(logits, md.allowed_token_bitmask)
        if md.banned_token_ids is not None:
            logits = apply_banned_tokens(logits, md.banned_token_ids, md.is_banned)
        if md.repetition_penalty is not None:
            logits = apply_repetition_penalty(logits, md.seen_token_ids, md.repetition_penalty)
        if md.frequency_penalty is not None:
            logits = apply_frequency_presence_penalties(
                logits, md.output_token_ids, md.output_token_counts, md.frequency_penalty, md.presence_penalty
            )

        greedy_ids = argmax_blockwise(logits) if md.has_greedy else None
        if md.is_all_greedy and not (md.has_logprobs and md.is_logprobs_processed):
            return self._output(greedy_ids, raw_logits, raw_stats, md)

        if md.has_temperature_scaling:
            logits = apply_temperature(logits, md.temperature)
        probs = torch.softmax(logits, dim=1)
        block_cum = block_cumulative_mass(probs)  # [num_seqs, num_blocks] float64
        total_mass = block_cum[:, -1]
        uniforms = stream_uniforms(md.stream_keys, md.positions)
        is_row_truncated = None
        candidates = None
        if md.has_truncation:
            is_row_truncated = is_truncated(logits.shape[1], md.top_k, md.top_p, md.min_p) & ~md.is_greedy
            candidates = select_candidates(
                probs, total_mass, is_row_truncated, md.top_k, md.top_p, md.min_p, self.initial_candidates
            )
            token_ids = draw_from_candidates(candidates.probs, candidates.token_ids, candidates.keep_len, uniforms)
            if not md.is_all_truncated:
                token_ids = torch.where(is_row_truncated, token_ids, draw_from_probs(probs, block_cum, uniforms))
        else:
            token_ids = draw_from_probs(probs, block_cum, uniforms)
        if greedy_ids is not None:
            token_ids = torch.where(md.is_greedy, greedy_ids, token_ids)

        if not (md.has_logprobs and md.is_logprobs_processed):
            return self._output(token_ids, raw_logits, raw_stats, md)
        stats = logprob_stats(logits, probs, md.num_top_logprobs)
        if candidates is not None:
            kept_cum = candidates.probs.to(torch.float64).cumsum(1)
            kept_mass = kept_cum.gather(1, (candidates.keep_len - 1).unsqueeze(1)).squeeze(1)
            stats = apply_kept_prefix(stats, candidates.keep_len, kept_mass, total_mass, is_row_truncated)
        return self._output(token_ids, logits, stats, md)

    @staticmethod
    def _has_processing(md: SamplingMetadata) -> bool:
        return (
            md.bias_token_ids is not None
            or md.allowed_token_bitmask is not None
            or md.banned_token_ids is not None
            or md.repetition_penalty is not None
            or md.frequency_penalty is not None
            or md.has_temperature_scaling
        )

    @staticmethod
    def _output(token_ids: Tensor, logits: Tensor, stats: LogprobStats | None, md: SamplingMetadata) -> SamplerOutput:
        if stats is None:
            return SamplerOutput(token_ids=token_ids)
        return SamplerOutput(
            token_ids=token_ids,
            logprobs=token_logprobs(logits, stats.lse, token_ids),
            top_token_ids=stats.top_token_ids,
            top_logprobs=stats.top_logprobs,
        )
