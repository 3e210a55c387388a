"""Truncation: top_k, then top_p (over the top_k survivors, renormalised), then min_p.

Every cut keeps a prefix of the row sorted by probability, so the kept set is the shortest of the three
prefixes. It is found without sorting the vocabulary: the row's top K candidates come from one blockwise
pass over the processed logits (hearth.kernels.logits.blockwise; temperature keeps their order), and only the K
candidates are tempered into weights exp((logit - row max) / T). A cut is settled when it falls inside
them:
  - top_k settles when k <= K;
  - top_p settles when the candidates' cumulative weight reaches top_p of the base (the top_k weight when
    top_k settled, else the row's total weight, which the caller passes when it has it);
  - min_p settles when some candidate's weight falls below min_p (the top weight is 1).
The few rows left unsettled (very flat distributions) are retried with GROWTH times more candidates,
ending at the whole vocabulary, where every cut settles. Each row's K depends only on that row, so a
row's kept set is the same whatever else is in the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from hearth.kernels.logits.blockwise import topk_blockwise

INITIAL_CANDIDATES = 64
GROWTH = 8


@dataclass(frozen=True)
class Candidates:
    # [num_seqs, K] processed logits sorted descending, their token ids and weights
    # exp((logit - row max) / temperature) (1 for the first); entries past keep_len are unused.
    logits: Tensor
    token_ids: Tensor
    weights: Tensor
    # [num_seqs] int64 in [1, K]: length of the kept prefix, and [num_seqs] float64 its total weight.
    keep_len: Tensor
    kept_weight: Tensor


def is_truncated(vocab_size: int, top_k: Tensor | None, top_p: Tensor | None, min_p: Tensor | None) -> Tensor:
    """[num_seqs] bool: the row cuts its distribution at all."""
    cuts = [t for t in (
        top_k < vocab_size if top_k is not None else None,
        top_p < 1.0 if top_p is not None else None,
        min_p > 0.0 if min_p is not None else None,
    ) if t is not None]
    result = cuts[0]
    for cut in cuts[1:]:
        result = result | cut
    return result


def candidate_weights(logits: Tensor, temperature: Tensor) -> Tensor:
    """exp((logits - first) / temperature) for candidates sorted descending: [num_seqs, K] in [0, 1]."""
    shifted = (logits - logits[:, :1]) / temperature.unsqueeze(1)
    # A row whose every logit is -inf keeps its first candidate (weight 1) rather than NaNs.
    return torch.nan_to_num_(shifted.exp_(), nan=0.0).index_fill_(1, torch.zeros(1, dtype=torch.int64, device=logits.device), 1.0)


def _kept_prefix(
    weights: Tensor,
    total_weight: Tensor | None,
    vocab_size: int,
    top_k: Tensor | None,
    top_p: Tensor | None,
    min_p: Tensor | None,
) -> tuple[Tensor, Tensor, Tensor]:
    """(keep_len, kept_weight, is_settled), each [num_seqs], for candidate weights [num_seqs, K]."""
    num_seqs, k = weights.shape
    is_whole_vocab = k >= vocab_size
    cum = weights.to(torch.float64).cumsum(1)
    has_total = is_whole_vocab or total_weight is not None
    if is_whole_vocab or total_weight is None:
        total_weight = cum[:, -1]  # exact over the whole vocabulary; a placeholder otherwise
    keep_len = torch.full((num_seqs,), k, dtype=torch.int64, device=weights.device)
    is_settled = torch.full((num_seqs,), is_whole_vocab, dtype=torch.bool, device=weights.device)
    base = total_weight
    is_base_known = torch.full((num_seqs,), has_total, dtype=torch.bool, device=weights.device)
    if top_k is not None:
        is_k_off = top_k >= vocab_size
        is_k_settled = (top_k <= k) & ~is_k_off
        k_len = top_k.clamp(max=k)
        keep_len = torch.minimum(keep_len, k_len)
        is_settled = is_settled | is_k_settled
        base = torch.where(is_k_settled, cum.gather(1, (k_len - 1).unsqueeze(1)).squeeze(1), base)
        is_base_known = is_base_known | is_k_settled
    if top_p is not None:
        is_p_on = top_p < 1.0
        threshold = top_p.to(torch.float64) * base
        p_len = torch.searchsorted(cum, threshold.unsqueeze(1)).squeeze(1) + 1  # first n: cum[n-1] >= threshold
        is_p_settled = is_p_on & (p_len <= k) & is_base_known
        keep_len = torch.where(is_p_settled, torch.minimum(keep_len, p_len), keep_len)
        is_settled = is_settled | is_p_settled
    if min_p is not None:
        is_m_on = min_p > 0.0
        m_len = (weights >= min_p.unsqueeze(1)).sum(1)
        keep_len = torch.where(is_m_on, torch.minimum(keep_len, m_len), keep_len)
        is_settled = is_settled | (is_m_on & (m_len < k))
    if top_k is not None:
        # An unsettled top_k (K < k < vocab) leaves the top_p base unknown.
        is_settled = is_settled & (is_k_settled | is_k_off | is_whole_vocab)
    keep_len = keep_len.clamp_(min=1, max=k)
    return keep_len, cum.gather(1, (keep_len - 1).unsqueeze(1)).squeeze(1), is_settled


def select_candidates(
    logits: Tensor,
    temperature: Tensor,
    probs: Tensor | None,
    block_cum: Tensor | None,
    is_row_truncated: Tensor,
    top_k: Tensor | None,
    top_p: Tensor | None,
    min_p: Tensor | None,
    initial_candidates: int = INITIAL_CANDIDATES,
    block_max: Tensor | None = None,
) -> Candidates:
    """The kept prefix of every truncated row of the processed logits [num_seqs, vocab] (pre-temperature).

    probs = softmax(logits / T) and its block_cum (hearth.kernels.logits.sampling.block_cumulative_mass), when computed,
    give each row's total weight; rows with top_p and no top_k need it (without it they grow to the whole
    vocabulary). block_max: the logits' block maxima, when already known. Other rows keep K candidates.
    """
    vocab_size = logits.shape[1]
    k = min(initial_candidates, vocab_size)
    cand_logits, cand_ids = topk_blockwise(logits, k, block_max=block_max)
    weights = candidate_weights(cand_logits, temperature)
    total_weight = None
    if probs is not None:
        # The row's total in weight units, where its most likely token weighs 1: sum(p) / p(top).
        total_weight = block_cum[:, -1] / probs.gather(1, cand_ids[:, :1]).squeeze(1).to(torch.float64)
    keep_len, kept_weight, is_settled = _kept_prefix(weights, total_weight, vocab_size, top_k, top_p, min_p)
    return grow_unsettled(logits, temperature, total_weight, is_row_truncated & ~is_settled, top_k, top_p, min_p,
                          Candidates(cand_logits, cand_ids, weights, keep_len, kept_weight))


def grow_unsettled(
    logits: Tensor,
    temperature: Tensor,
    total_weight: Tensor | None,
    is_unsettled: Tensor,
    top_k: Tensor | None,
    top_p: Tensor | None,
    min_p: Tensor | None,
    first: Candidates,
) -> Candidates:
    """`first` (K candidates per row) with its unsettled rows [num_seqs] bool retried on GROWTH times more
    candidates until each settles. total_weight [num_seqs] float64: each row's total weight, when known."""
    vocab_size = logits.shape[1]
    cand_logits, cand_ids, weights = first.logits, first.token_ids, first.weights
    keep_len, kept_weight = first.keep_len, first.kept_weight
    k = cand_logits.shape[1]
    # Rows that do not truncate are drawn from the whole vocabulary elsewhere.
    pending = is_unsettled.nonzero().squeeze(1)  # host read: the only one
    while pending.numel():
        k = min(vocab_size, k * GROWTH)
        sub_logits, sub_ids = topk_blockwise(logits.index_select(0, pending), k)
        sub_weights = candidate_weights(sub_logits, temperature.index_select(0, pending))
        sub_keep, sub_kept, sub_settled = _kept_prefix(
            sub_weights,
            total_weight.index_select(0, pending) if total_weight is not None else None,
            vocab_size,
            *(t.index_select(0, pending) if t is not None else None for t in (top_k, top_p, min_p)),
        )
        pad = k - cand_logits.shape[1]
        cand_logits = torch.nn.functional.pad(cand_logits, (0, pad), value=float("-inf"))
        cand_ids = torch.nn.functional.pad(cand_ids, (0, pad), value=0)
        weights = torch.nn.functional.pad(weights, (0, pad), value=0.0)
        done = sub_settled.nonzero().squeeze(1)
        rows = pending.index_select(0, done)
        cand_logits[rows] = sub_logits.index_select(0, done)
        cand_ids[rows] = sub_ids.index_select(0, done)
        weights[rows] = sub_weights.index_select(0, done)
        keep_len[rows] = sub_keep.index_select(0, done)
        kept_weight[rows] = sub_kept.index_select(0, done)
        pending = pending.index_select(0, (~sub_settled).nonzero().squeeze(1))
    return Candidates(logits=cand_logits, token_ids=cand_ids, weights=weights, keep_len=keep_len,
                      kept_weight=kept_weight)
