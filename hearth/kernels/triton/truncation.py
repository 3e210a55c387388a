"""Candidate search for top_k, top_p and min_p: hearth.kernels.logits.truncation's first round in one kernel.

The row's top K candidates come from the blockwise top-k over the block maxima row_stats already computed
(a [num_seqs, K * 64] gather, not a whole-vocabulary pass); one program per row then tempers them into
weights, finds the kept prefix of each cut and says whether the row settled, as hearth.kernels.logits.truncation's
candidate_weights and _kept_prefix do. Unsettled rows (very flat distributions) grow on the torch path
(hearth.kernels.logits.truncation.grow_unsettled), after its one host read.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from hearth.kernels.logits.blockwise import topk_blockwise
from hearth.kernels.logits.truncation import INITIAL_CANDIDATES, Candidates, grow_unsettled


@triton.jit
def _pick(values, index):
    return tl.sum(tl.where(tl.arange(0, values.shape[0]) == index, values, 0))


@triton.jit
def _kept_prefix_kernel(logits_ptr, temp_ptr, total_ptr, top_k_ptr, top_p_ptr, min_p_ptr, w_ptr, keep_ptr,
                        kept_ptr, settled_ptr, num_candidates, vocab_size, HAS_TOTAL: tl.constexpr,
                        HAS_TOP_K: tl.constexpr, HAS_TOP_P: tl.constexpr, HAS_MIN_P: tl.constexpr,
                        BLOCK_K: tl.constexpr):
    # grid (num_seqs,): candidate logits [num_seqs, K] sorted descending -> weights [num_seqs, K] f32,
    # keep_len [num_seqs] int64, kept weight [num_seqs] f64, settled [num_seqs] int8
    row = tl.program_id(0).to(tl.int64)
    k = tl.arange(0, BLOCK_K)
    inside = k < num_candidates
    logits = tl.load(logits_ptr + row * num_candidates + k, mask=inside, other=float("-inf"))
    first = tl.max(tl.where(k == 0, logits, float("-inf")))
    w = tl.exp(tl.math.div_rn(logits - first, tl.load(temp_ptr + row)))
    w = tl.where(k == 0, 1.0, tl.where(inside & (w == w), w, 0.0))  # an all -inf row keeps its first (no NaN)
    tl.store(w_ptr + row * num_candidates + k, w, mask=inside)
    cum = tl.cumsum(w.to(tl.float64), 0)
    is_whole = tl.zeros([], tl.int1) | (num_candidates >= vocab_size)  # a tensor even when both are 1
    total = _pick(cum, num_candidates - 1)
    if HAS_TOTAL:
        total = tl.where(is_whole, total, tl.load(total_ptr + row))
    keep = tl.full([], num_candidates, tl.int64)
    is_settled = is_whole
    base = total
    is_base_known = is_whole | HAS_TOTAL
    if HAS_TOP_K:
        top_k = tl.load(top_k_ptr + row)
        is_k_off = top_k >= vocab_size
        is_k_settled = (top_k <= num_candidates) & ~is_k_off
        k_len = tl.minimum(top_k, num_candidates)
        keep = tl.minimum(keep, k_len)
        is_settled = is_settled | is_k_settled
        base = tl.where(is_k_settled, _pick(cum, k_len - 1), base)
        is_base_known = is_base_known | is_k_settled
    if HAS_TOP_P:
        top_p = tl.load(top_p_ptr + row)
        threshold = top_p.to(tl.float64) * base
        p_len = tl.sum(((cum < threshold) & inside).to(tl.int64)) + 1  # first n with cum[n - 1] >= threshold
        is_p_settled = (top_p < 1.0) & (p_len <= num_candidates) & is_base_known
        keep = tl.where(is_p_settled, tl.minimum(keep, p_len), keep)
        is_settled = is_settled | is_p_settled
    if HAS_MIN_P:
        min_p = tl.load(min_p_ptr + row)
        m_len = tl.sum(((w >= min_p) & inside).to(tl.int64))
        keep = tl.where(min_p > 0.0, tl.minimum(keep, m_len), keep)
        is_settled = is_settled | ((min_p > 0.0) & (m_len < num_candidates))
    if HAS_TOP_K:
        is_settled = is_settled & (is_k_settled | is_k_off | is_whole)
    keep = tl.minimum(tl.maximum(keep, 1), num_candidates)
    tl.store(keep_ptr + row, keep)
    tl.store(kept_ptr + row, _pick(cum, keep - 1))
    tl.store(settled_ptr + row, is_settled.to(tl.int8))


def kept_prefix(cand_logits: Tensor, temperature: Tensor, total_weight: Tensor | None, vocab_size: int,
                top_k: Tensor | None, top_p: Tensor | None, min_p: Tensor | None
                ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """cand_logits [num_seqs, K] sorted descending -> (weights [num_seqs, K] f32, keep_len [num_seqs] int64,
    kept_weight [num_seqs] f64, is_settled [num_seqs] bool): hearth.kernels.logits.truncation.candidate_weights and
    _kept_prefix. total_weight [num_seqs] f64: the row's total weight, when known. No host sync."""
    num_seqs, num_candidates = cand_logits.shape
    device = cand_logits.device
    weights = torch.empty(num_seqs, num_candidates, dtype=torch.float32, device=device)
    keep_len = torch.empty(num_seqs, dtype=torch.int64, device=device)
    kept_weight = torch.empty(num_seqs, dtype=torch.float64, device=device)
    is_settled = torch.empty(num_seqs, dtype=torch.int8, device=device)
    dummy = kept_weight
    _kept_prefix_kernel[(num_seqs,)](
        cand_logits.float().contiguous(), temperature.float().contiguous(),
        total_weight.contiguous() if total_weight is not None else dummy,
        top_k.contiguous() if top_k is not None else keep_len,
        top_p.float().contiguous() if top_p is not None else dummy,
        min_p.float().contiguous() if min_p is not None else dummy,
        weights, keep_len, kept_weight, is_settled, num_candidates, vocab_size,
        HAS_TOTAL=total_weight is not None, HAS_TOP_K=top_k is not None, HAS_TOP_P=top_p is not None,
        HAS_MIN_P=min_p is not None, BLOCK_K=triton.next_power_of_2(num_candidates))
    return weights, keep_len, kept_weight, is_settled.bool()


def select_candidates(logits: Tensor, temperature: Tensor, total: Tensor | None, probs: Tensor | None,
                      is_row_truncated: Tensor, top_k: Tensor | None, top_p: Tensor | None, min_p: Tensor | None,
                      block_max: Tensor, initial_candidates: int = INITIAL_CANDIDATES) -> Candidates:
    """hearth.kernels.logits.truncation.select_candidates over processed logits [num_seqs, vocab] with their block maxima;
    total [num_seqs] f64: the sum of probs = softmax(logits / T), when computed. One host read (whether any
    row is unsettled), as the torch path."""
    vocab_size = logits.shape[1]
    k = min(initial_candidates, vocab_size)
    cand_logits, cand_ids = topk_blockwise(logits, k, block_max=block_max)
    total_weight = None
    if probs is not None:
        # The row's total in weight units, where its most likely token weighs 1: sum(p) / p(top).
        total_weight = total / probs.gather(1, cand_ids[:, :1]).squeeze(1).to(torch.float64)
    weights, keep_len, kept_weight, is_settled = kept_prefix(cand_logits, temperature, total_weight, vocab_size,
                                                             top_k, top_p, min_p)
    return grow_unsettled(logits, temperature, total_weight, is_row_truncated & ~is_settled, top_k, top_p, min_p,
                          Candidates(cand_logits, cand_ids, weights, keep_len, kept_weight))
