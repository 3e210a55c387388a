"""Logprobs of the chosen token and the top alternatives, from softmax probabilities.

log_softmax(x)[i] = x[i] - lse, and lse = x[j] - log(p[j]) at the row's most likely token j (whose p is
at least 1/vocab, so its log is accurate). Reading lse off a softmax is cheaper on the CPU than
torch.logsumexp or a separate log_softmax pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from kernels.blockwise import topk_blockwise

# OpenAI's largest top_logprobs. Every row's alternatives come from a top-k of at least this size, so that
# which of several tied tokens a row lists, and in what order, does not depend on what the other rows of
# the batch ask for (topk orders ties differently for different k).
MIN_TOP_COMPUTED = 20


@dataclass(frozen=True)
class LogprobStats:
    # [num_seqs] float32: log-sum-exp of the row's logits.
    lse: Tensor
    # [num_seqs, num_top] int64 ids and float32 logprobs of the most likely tokens, descending.
    top_token_ids: Tensor
    top_logprobs: Tensor


def logprob_stats(logits: Tensor, probs: Tensor, num_top: int) -> LogprobStats:
    """Statistics of log_softmax(logits), given probs = softmax(logits) [num_seqs, vocab]."""
    top_probs, top_ids = topk_blockwise(probs, max(num_top, MIN_TOP_COMPUTED))
    return logprob_stats_from_top(logits, top_probs, top_ids, num_top)


def logprob_stats_from_top(logits: Tensor, top_probs: Tensor, top_ids: Tensor, num_top: int) -> LogprobStats:
    """Statistics of log_softmax(logits) from the row's most likely tokens, already found: top_probs and
    top_ids [num_seqs, >= min(num_top, vocab)] sorted descending, with at least one column."""
    lse = logits.gather(1, top_ids[:, :1]).squeeze(1) - top_probs[:, 0].log()
    top_ids = top_ids[:, :num_top]
    top_logprobs = logits.gather(1, top_ids) - lse.unsqueeze(1)
    return LogprobStats(lse=lse, top_token_ids=top_ids, top_logprobs=top_logprobs)


def token_logprobs(logits: Tensor, lse: Tensor, token_ids: Tensor) -> Tensor:
    """[num_seqs] logprob of token_ids under log_softmax(logits)."""
    return logits.gather(1, token_ids.unsqueeze(1)).squeeze(1) - lse


def apply_kept_prefix(
    stats: LogprobStats,
    logits: Tensor,
    keep_len: Tensor,
    kept_mass: Tensor,
    total_mass: Tensor,
    is_row_truncated: Tensor,
) -> LogprobStats:
    """Logprobs under the truncated, renormalised distribution: the row's lse drops by log(total / kept),
    alternatives past the kept prefix get -inf. stats.top_token_ids must be the head of the same sorted
    candidates whose prefix of length keep_len is kept.

    The alternatives are recomputed as logit - lse, the formula of token_logprobs, so that the chosen
    token's logprob and its entry among the alternatives are the same float.
    """
    shift = torch.where(is_row_truncated, (total_mass / kept_mass).log(), 0.0).to(stats.lse.dtype)
    lse = stats.lse - shift
    positions = torch.arange(stats.top_token_ids.shape[1], device=keep_len.device)
    is_dropped = is_row_truncated.unsqueeze(1) & (positions >= keep_len.unsqueeze(1))
    top = (logits.gather(1, stats.top_token_ids) - lse.unsqueeze(1)).masked_fill_(is_dropped, float("-inf"))
    return LogprobStats(lse=lse, top_token_ids=stats.top_token_ids, top_logprobs=top)
