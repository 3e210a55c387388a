"""Truncation: top_k, then top_p (over the top_k survivors, renormalised), then min_p.

Every cut keeps a prefix of the row sorted by probability, so the kept set is the shortest of the three
prefixes. It is found without sorting the vocabulary: the row's top K candidates come from one blockwise
pass (kernels.blockwise), and a cut is settled when it falls inside them:
  - top_k settles when k <= K;
  - top_p settles when the candidates' cumulative mass reaches top_p of the base mass (the top_k mass
    when top_k settled, else the whole row's mass);
  - min_p settles when some candidate falls below min_p * max probability.
The few rows left unsettled (very flat distributions) are retried with GROWTH times more candidates,
ending at the whole vocabulary. Each row's K depends only on that row, so a row's kept set is the same
whatever else is in the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from kernels.blockwise import topk_blockwise

INITIAL_CANDIDATES = 64
GROWTH = 8


@dataclass(frozen=True)
class Candidates:
    # [num_seqs, K] probabilities sorted descending and their token ids; entries past keep_len are unused.
    probs: Tensor
    token_ids: Tensor
    # [num_seqs] int64 in [1, K]: length of the kept prefix.
    keep_len: Tensor


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


def _kept_prefix(
    probs: Tensor,
    total_mass: Tensor,
    vocab_size: int,
    top_k: Tensor | None,
    top_p: Tensor | None,
    min_p: Tensor | None,
) -> tuple[Tensor, Tensor]:
    """(keep_len [num_seqs], is_settled [num_seqs]) for candidates `probs` [num_seqs, K] sorted descending."""
    num_seqs, k = probs.shape
    is_whole_vocab = k >= vocab_size
    cum = probs.to(torch.float64).cumsum(1)
    keep_len = torch.full((num_seqs,), k, dtype=torch.int64, device=probs.device)
    is_settled = torch.full((num_seqs,), is_whole_vocab, dtype=torch.bool, device=probs.device)
    base_mass = total_mass
    if top_k is not None:
        is_k_off = top_k >= vocab_size
        is_k_settled = (top_k <= k) & ~is_k_off
        k_len = top_k.clamp(max=k)
        keep_len = torch.minimum(keep_len, k_len)
        is_settled = is_settled | is_k_settled
        base_mass = torch.where(is_k_settled, cum.gather(1, (k_len - 1).unsqueeze(1)).squeeze(1), total_mass)
    if top_p is not None:
        is_p_on = top_p < 1.0
        threshold = top_p.to(torch.float64) * base_mass
        p_len = torch.searchsorted(cum, threshold.unsqueeze(1)).squeeze(1) + 1  # first n: cum[n-1] >= threshold
        keep_len = torch.where(is_p_on, torch.minimum(keep_len, p_len), keep_len)
        is_settled = is_settled | (is_p_on & (p_len <= k))
    if min_p is not None:
        is_m_on = min_p > 0.0
        m_len = (probs >= min_p.unsqueeze(1) * probs[:, :1]).sum(1)
        keep_len = torch.where(is_m_on, torch.minimum(keep_len, m_len), keep_len)
        is_settled = is_settled | (is_m_on & (m_len < k))
    if top_k is not None:
        # An unsettled top_k (K < k < vocab) leaves the top_p base mass unknown.
        is_settled = is_settled & (is_k_settled | is_k_off | is_whole_vocab)
    return keep_len.clamp_(min=1, max=k), is_settled


def select_candidates(
    probs: Tensor,
    total_mass: Tensor,
    is_row_truncated: Tensor,
    top_k: Tensor | None,
    top_p: Tensor | None,
    min_p: Tensor | None,
    initial_candidates: int = INITIAL_CANDIDATES,
) -> Candidates:
    """The kept prefix of every truncated row of probs [num_seqs, vocab]; other rows keep K candidates."""
    vocab_size = probs.shape[1]
    k = min(initial_candidates, vocab_size)
    cand_probs, cand_ids = topk_blockwise(probs, k)
    keep_len, is_settled = _kept_prefix(cand_probs, total_mass, vocab_size, top_k, top_p, min_p)
    # Rows that do not truncate are drawn from the whole vocabulary elsewhere.
    pending = (~(is_settled | ~is_row_truncated)).nonzero().squeeze(1)  # host read: the only one
    while pending.numel():
        k = min(vocab_size, k * GROWTH)
        sub_probs, sub_ids = topk_blockwise(probs.index_select(0, pending), k)
        sub_keep, sub_settled = _kept_prefix(
            sub_probs,
            total_mass.index_select(0, pending),
            vocab_size,
            *(t.index_select(0, pending) if t is not None else None for t in (top_k, top_p, min_p)),
        )
        pad = k - cand_probs.shape[1]
        cand_probs = torch.nn.functional.pad(cand_probs, (0, pad), value=0.0)
        cand_ids = torch.nn.functional.pad(cand_ids, (0, pad), value=0)
        done = sub_settled.nonzero().squeeze(1)
        rows = pending.index_select(0, done)
        cand_probs[rows] = sub_probs.index_select(0, done)
        cand_ids[rows] = sub_ids.index_select(0, done)
        keep_len[rows] = sub_keep.index_select(0, done)
        pending = pending.index_select(0, (~sub_settled).nonzero().squeeze(1))
    return Candidates(probs=cand_probs, token_ids=cand_ids, keep_len=keep_len)
