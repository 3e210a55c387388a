"""Logprobs of the chosen token and the top alternatives, from softmax probabilities.

log_softmax(x)[i] = x[i] - lse, and lse = x[j] - log(p[j]) at the row's most likely token j (whose p is
at least 1/vocab, so its log is accurate). Reading lse off a softmax is cheaper on the CPU than
torch.logsumexp or a separate log_softmax pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

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


def logprob_stats(logits: Tensor, probs: Tensor, top_token_ids: Tensor, num_top: int) -> LogprobStats:
    """Statistics of log_softmax(logits), given probs = softmax(logits) [num_seqs, vocab] and the row's
    most likely tokens top_token_ids [num_seqs, >= max(num_top, 1)], sorted descending."""
    first = top_token_ids[:, :1]
    lse = logits.gather(1, first).squeeze(1) - probs.gather(1, first).squeeze(1).log()
    top_ids = top_token_ids[:, :num_top]
    top_logprobs = logits.gather(1, top_ids) - lse.unsqueeze(1)
    return LogprobStats(lse=lse, top_token_ids=top_ids, top_logprobs=top_logprobs)


@dataclass(frozen=True)
class CandidateLogprobs:
    """Logprobs under a truncated row's kept distribution: log(weight / kept weight) of its candidates."""

    # [num_seqs, K] float32 for every candidate (-inf past the kept prefix).
    logprobs: Tensor
    # [num_seqs, num_top] the first num_top candidates and their logprobs.
    top_token_ids: Tensor
    top_logprobs: Tensor

    def token_logprobs(self, token_ids: Tensor, candidate_ids: Tensor) -> Tensor:
        """[num_seqs] logprob of each row's chosen token, one of its kept candidates."""
        position = (candidate_ids == token_ids.unsqueeze(1)).to(torch.int8).argmax(1, keepdim=True)
        return self.logprobs.gather(1, position).squeeze(1)


def candidate_logprob_stats(candidates, temperature: Tensor, num_top: int) -> CandidateLogprobs:
    """Logprobs of hearth.kernels.logits.truncation.Candidates: (logit - max) / T - log(kept weight), the exponent of
    the same weights the draw used, so the chosen token's value equals its entry among the alternatives."""
    shifted = (candidates.logits - candidates.logits[:, :1]) / temperature.unsqueeze(1)
    logprobs = shifted - candidates.kept_weight.log().to(shifted.dtype).unsqueeze(1)
    positions = torch.arange(logprobs.shape[1], device=logprobs.device)
    logprobs = logprobs.masked_fill_(positions >= candidates.keep_len.unsqueeze(1), float("-inf"))
    return CandidateLogprobs(logprobs=logprobs, top_token_ids=candidates.token_ids[:, :num_top],
                             top_logprobs=logprobs[:, :num_top])
