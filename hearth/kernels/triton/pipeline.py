"""The sampler's pipeline (hearth.kernels.logits.sampler.Sampler) with its whole-vocabulary passes in Triton.

Whole-row passes, per call: raw statistics (when raw logprobs are asked for), processing (stages 2-4, when
some row uses them), block maxima with the tempered row's max and sum of exp, the tempered softmax (only
when some row needs its whole distribution) and the whole-vocabulary draw. What stays in torch works on
[num_seqs, <= K * 64] tensors: the blockwise top-k and argmax over the block maxima, the outputs' gathers.
The caller's logits are never written: processing writes a new float32 buffer, so raw logprobs read the
chosen token's raw logit straight from them.
"""

from __future__ import annotations

import torch
from torch import Tensor

from hearth.kernels.logits.blockwise import argmax_blockwise, topk_blockwise
from hearth.kernels.logits.logprobs import MIN_TOP_COMPUTED
from hearth.kernels.logits.metadata import SamplerOutput, SamplingMetadata
from hearth.kernels.logits.truncation import INITIAL_CANDIDATES, is_truncated
from hearth.kernels.triton.draw import draw_from_candidates, draw_from_probs
from hearth.kernels.triton.processing import apply_processing
from hearth.kernels.triton.softmax import row_stats, tempered_softmax
from hearth.kernels.triton.truncation import select_candidates


def _has_processing(md: SamplingMetadata) -> bool:
    return any(t is not None for t in (md.bias_token_ids, md.banned_token_ids, md.allowed_token_bitmask,
                                        md.repetition_penalty, md.frequency_penalty))


def sample(logits: Tensor, md: SamplingMetadata, initial_candidates: int = INITIAL_CANDIDATES,
           processed_output=None) -> SamplerOutput:
    """logits [num_seqs, vocab] (any float dtype) -> SamplerOutput, as hearth.kernels.logits.sampler.Sampler.

    processed_output: Sampler._processed_output (the processed-logprobs assembly, shared with the torch
    path)."""
    wants_raw = md.has_logprobs and not md.is_logprobs_processed
    wants_processed = md.has_logprobs and md.is_logprobs_processed
    num_top = max(md.num_top_logprobs, MIN_TOP_COMPUTED)

    raw = None  # (lse [num_seqs], top ids [num_seqs, n], top logprobs [num_seqs, n])
    if wants_raw:
        raw_block_max, raw_max, raw_sum = row_stats(logits)
        lse = raw_max + raw_sum.log()
        top_ids = topk_blockwise(logits, num_top, block_max=raw_block_max)[1][:, :md.num_top_logprobs]
        raw = (lse, top_ids, logits.gather(1, top_ids).float() - lse.unsqueeze(1))
    if _has_processing(md):
        work = apply_processing(logits, md)
    else:
        work = logits if logits.dtype == torch.float32 else logits.float()

    needs_probs = md.needs_total_mass or wants_processed
    block_max = row_max = sum_exp = None
    if needs_probs or md.has_greedy or md.has_truncation:
        block_max, row_max, sum_exp = row_stats(work, md.temperature if needs_probs else None)
    greedy_ids = argmax_blockwise(work, block_max=block_max) if md.has_greedy else None
    if md.is_all_greedy and not wants_processed:
        return _raw_output(greedy_ids, logits, raw)

    probs = block_sums = total = None
    if needs_probs:
        probs, block_sums = tempered_softmax(work, md.temperature, row_max, sum_exp)
        total = block_sums.to(torch.float64).sum(1)

    candidates = is_row_truncated = None
    if md.has_truncation:
        is_row_truncated = is_truncated(work.shape[1], md.top_k, md.top_p, md.min_p) & ~md.is_greedy
        candidates = select_candidates(work, md.temperature, total, probs, is_row_truncated, md.top_k, md.top_p,
                                       md.min_p, block_max, initial_candidates)
        token_ids = draw_from_candidates(candidates.weights, candidates.token_ids, candidates.keep_len,
                                         md.stream_keys, md.positions)
        if not md.is_all_truncated and probs is not None:  # else: the other rows are greedy
            whole = draw_from_probs(probs, block_sums, md.stream_keys, md.positions)
            token_ids = torch.where(is_row_truncated, token_ids, whole)
    else:
        token_ids = draw_from_probs(probs, block_sums, md.stream_keys, md.positions)
    if greedy_ids is not None:
        token_ids = torch.where(md.is_greedy, greedy_ids, token_ids)

    if not wants_processed:
        return _raw_output(token_ids, logits, raw)
    return processed_output(token_ids, work, probs, block_max, candidates, is_row_truncated, md)


def _raw_output(token_ids: Tensor, logits: Tensor, raw) -> SamplerOutput:
    if raw is None:
        return SamplerOutput(token_ids=token_ids)
    lse, top_ids, top_logprobs = raw
    chosen = logits.gather(1, token_ids.unsqueeze(1)).squeeze(1).float()
    return SamplerOutput(token_ids=token_ids, logprobs=chosen - lse, top_token_ids=top_ids, top_logprobs=top_logprobs)
