"""Token masks: the constrained-decoding bitmask and min_tokens bans set logits to -inf."""

from __future__ import annotations

import torch
from torch import Tensor

_BIT_SHIFTS: dict[torch.device, Tensor] = {}


def unpack_bitmask(bitmask: Tensor, vocab_size: int) -> Tensor:
    """[num_seqs, ceil(vocab / 32)] int32 -> [num_seqs, vocab] bool, bit j of word w is token 32 * w + j."""
    shifts = _BIT_SHIFTS.get(bitmask.device)
    if shifts is None:
        shifts = _BIT_SHIFTS.setdefault(bitmask.device, torch.arange(32, dtype=torch.int32, device=bitmask.device))
    bits = (bitmask.unsqueeze(-1) >> shifts) & 1  # [num_seqs, num_words, 32]
    return bits.flatten(1)[:, :vocab_size].bool()


def apply_token_bitmask(logits: Tensor, allowed_token_bitmask: Tensor) -> Tensor:
    """Set logits of tokens whose bit is clear to -inf; in place, returns logits."""
    is_allowed = unpack_bitmask(allowed_token_bitmask, logits.shape[1])
    return logits.masked_fill_(~is_allowed, float("-inf"))


def apply_banned_tokens(logits: Tensor, banned_token_ids: Tensor, is_banned: Tensor) -> Tensor:
    """Set logits at banned ids to -inf where is_banned; in place, returns logits."""
    values = logits.gather(1, banned_token_ids).masked_fill_(is_banned, float("-inf"))
    return logits.scatter_(1, banned_token_ids, values)
