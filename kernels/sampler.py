"""The sampler: one batched pass from logits to next tokens and their logprobs."""

from __future__ import annotations

import torch
from torch import Tensor

from kernels.blockwise import argmax_blockwise
from kernels.logit_bias import apply_logit_bias
from kernels.logprobs import (
    LogprobStats,
    apply_kept_prefix,
    logprob_stats,
    logprob_stats_from_top,
    token_logprobs,
)
from kernels.metadata import SamplerOutput, SamplingMetadata
from kernels.penalties import apply_frequency_presence_penalties, apply_repetition_penalty
from kernels.sampling import block_cumulative_mass, draw_from_candidates, draw_from_probs, stream_uniforms
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
    Stages 2-4 and 6 are computed together by `_process` (same values, fewer passes over the logits).
    """

    def __init__(self, initial_candidates: int = INITIAL_CANDIDATES) -> None:
        self.initial_candidates = initial_candidates

    def __call__(self, logits: Tensor, md: SamplingMetadata) -> SamplerOutput:
        # Read only: the caller's logits (or their float32 conversion) are never written.
        raw_logits = logits.to(torch.float32)
        wants_processed = md.has_logprobs and md.is_logprobs_processed
        raw_stats = None
        if md.has_logprobs and not wants_processed:
            raw_stats = logprob_stats(raw_logits, torch.softmax(raw_logits, dim=1), md.num_top_logprobs)
        logits = self._process(raw_logits, md)

        # Greedy rows carry temperature 1: for them these are still the logits of stages 2-4.
        greedy_ids = argmax_blockwise(logits) if md.has_greedy else None
        if md.is_all_greedy and not wants_processed:
            return self._output(greedy_ids, raw_logits, raw_stats)

        probs = torch.softmax(logits, dim=1)
        uniforms = stream_uniforms(md.stream_keys, md.positions)
        # Block sums serve the whole-vocabulary draw only: a batch whose rows all truncate skips them.
        block_cum = None if md.has_truncation and md.is_all_truncated else block_cumulative_mass(probs)
        candidates = None
        if md.has_truncation:
            is_row_truncated = is_truncated(logits.shape[1], md.top_k, md.top_p, md.min_p) & ~md.is_greedy
            # A softmax row sums to 1; its float32 probabilities sum to 1 within ~1e-5 at 128k tokens, one
            # rounding of the normaliser shared by every entry. Measuring top_p against 1 saves a pass over
            # the batch; the cut moves by at most that ~1e-5 relative, and the shared error cancels from
            # the renormalised logprobs (kept mass and lse both carry it) instead of surviving in them.
            total_mass = torch.ones(md.num_seqs, dtype=torch.float64, device=logits.device)
            candidates = select_candidates(
                probs, total_mass, is_row_truncated, md.top_k, md.top_p, md.min_p, self.initial_candidates
            )
            token_ids = draw_from_candidates(candidates.probs, candidates.token_ids, candidates.keep_len, uniforms)
            if block_cum is not None:
                token_ids = torch.where(is_row_truncated, token_ids, draw_from_probs(probs, block_cum, uniforms))
        else:
            token_ids = draw_from_probs(probs, block_cum, uniforms)
        if greedy_ids is not None:
            token_ids = torch.where(md.is_greedy, greedy_ids, token_ids)

        if not wants_processed:
            return self._output(token_ids, raw_logits, raw_stats)
        if candidates is None:
            return self._output(token_ids, logits, logprob_stats(logits, probs, md.num_top_logprobs))
        # Every row's candidates are its exact most likely tokens, sorted, at least min(64, vocab) of them
        # (>= MIN_TOP_COMPUTED, a fixed count): the alternatives are their head, in the order whose prefix
        # the truncation kept.
        stats = logprob_stats_from_top(logits, candidates.probs, candidates.token_ids, md.num_top_logprobs)
        kept_cum = candidates.probs.to(torch.float64).cumsum(1)
        kept_mass = kept_cum.gather(1, (candidates.keep_len - 1).unsqueeze(1)).squeeze(1)
        stats = apply_kept_prefix(stats, logits, candidates.keep_len, kept_mass, total_mass, is_row_truncated)
        return self._output(token_ids, logits, stats)

    @staticmethod
    def _process(raw_logits: Tensor, md: SamplingMetadata) -> Tensor:
        """Stages 2-4 and temperature, on a new tensor; raw_logits itself when no stage is active.

        The temperature division makes the working copy (one pass, where a copy and an in-place division
        were two). The sparse stages act on pre-temperature values, so the ids they touch get their raw
        values back before them and are divided after them: every logit ends with exactly the float32 value
        of the stages run one by one in the documented order. The bitmask only writes -inf, which the
        sparse stages and the division keep, so it can come last.
        """
        has_sparse = (
            md.bias_token_ids is not None
            or md.banned_token_ids is not None
            or md.repetition_penalty is not None
            or md.frequency_penalty is not None
        )
        if not (has_sparse or md.has_temperature_scaling or md.allowed_token_bitmask is not None):
            return raw_logits
        temperature = md.temperature.unsqueeze(1)
        touched = None  # [num_seqs, num_touched]: every id a sparse stage reads or writes (with repeats)
        if md.has_temperature_scaling:
            logits = raw_logits / temperature
            if has_sparse:
                id_lists = (md.bias_token_ids, md.banned_token_ids, md.seen_token_ids, md.output_token_ids)
                touched = torch.cat([ids for ids in id_lists if ids is not None], dim=1)
                logits.scatter_(1, touched, raw_logits.gather(1, touched))
        else:
            logits = raw_logits.clone()

        if md.bias_token_ids is not None:
            logits = apply_logit_bias(logits, md.bias_token_ids, md.bias_values)
        if md.banned_token_ids is not None:
            logits = apply_banned_tokens(logits, md.banned_token_ids, md.is_banned)
        if md.repetition_penalty is not None:
            logits = apply_repetition_penalty(logits, md.seen_token_ids, md.repetition_penalty)
        if md.frequency_penalty is not None:
            logits = apply_frequency_presence_penalties(
                logits, md.output_token_ids, md.output_token_counts, md.frequency_penalty, md.presence_penalty
            )
        if touched is not None:
            # Repeated ids all hold the same value, so the scatter is deterministic.
            logits.scatter_(1, touched, logits.gather(1, touched) / temperature)
        if md.allowed_token_bitmask is not None:
            logits = apply_token_bitmask(logits, md.allowed_token_bitmask)
        return logits

    @staticmethod
    def _output(token_ids: Tensor, logits: Tensor, stats: LogprobStats | None) -> SamplerOutput:
        if stats is None:
            return SamplerOutput(token_ids=token_ids)
        return SamplerOutput(
            token_ids=token_ids,
            logprobs=token_logprobs(logits, stats.lse, token_ids),
            top_token_ids=stats.top_token_ids,
            top_logprobs=stats.top_logprobs,
        )
