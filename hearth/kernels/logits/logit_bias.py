"""logit_bias: add a per-row sparse bias to the raw logits."""

from __future__ import annotations

from torch import Tensor


def apply_logit_bias(logits: Tensor, bias_token_ids: Tensor, bias_values: Tensor) -> Tensor:
    """logits [num_seqs, vocab] += bias at [num_seqs, num_biased] ids; in place, returns logits.

    Padding entries add 0.0, which leaves every finite logit and -inf unchanged.
    """
    return logits.scatter_add_(1, bias_token_ids, bias_values.to(logits.dtype))
