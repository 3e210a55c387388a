"""Repetition, frequency and presence penalties, applied sparsely at the ids a row has seen.

Each op gathers the logits at a [num_seqs, L] id list, penalises them and scatters them back. An id may
appear several times in a row (padding repeats the row's own ids): every copy computes the same value
from the same gathered logit, so the scatter is deterministic.
"""

from __future__ import annotations

import torch
from torch import Tensor


def apply_repetition_penalty(logits: Tensor, seen_token_ids: Tensor, repetition_penalty: Tensor) -> Tensor:
    """Divide positive, multiply non-positive logits of seen ids by the row's penalty; in place."""
    values = logits.gather(1, seen_token_ids)
    penalty = repetition_penalty.unsqueeze(1)
    values = torch.where(values > 0, values / penalty, values * penalty)
    return logits.scatter_(1, seen_token_ids, values)


def apply_frequency_presence_penalties(
    logits: Tensor,
    output_token_ids: Tensor,
    output_token_counts: Tensor,
    frequency_penalty: Tensor,
    presence_penalty: Tensor,
) -> Tensor:
    """logit[t] -= count[t] * frequency + (count[t] > 0) * presence, over the output so far; in place."""
    values = logits.gather(1, output_token_ids)
    counts = output_token_counts.to(logits.dtype)
    penalty = counts * frequency_penalty.unsqueeze(1) + (counts > 0).to(logits.dtype) * presence_penalty.unsqueeze(1)
    return logits.scatter_(1, output_token_ids, values - penalty)
