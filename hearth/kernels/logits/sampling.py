"""Temperature and seeded draws.

Every random row draws one uniform per step, a pure function of (stream key, position) through the
splitmix64 counter-based hash: the same request gets the same tokens whatever else is in the batch and
wherever its row sits, with no generator state shared between rows or kept between steps. The token is
the inverse CDF of the row's (truncated) distribution at that uniform.
"""

from __future__ import annotations

import torch
from torch import Tensor

from hearth.kernels.logits.blockwise import BLOCK_SIZE, block_reduce, gather_blocks

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def mix64_int(value: int) -> int:
    """splitmix64's finaliser on a Python int (mod 2**64); the reference for `mix64`."""
    value &= _MASK64
    value = ((value ^ (value >> 30)) * _MIX1) & _MASK64
    value = ((value ^ (value >> 27)) * _MIX2) & _MASK64
    return value ^ (value >> 31)


def stream_key(seed: int, choice_index: int) -> int:
    """The stream key of choice `choice_index` of a request seeded with `seed`, as a signed int64."""
    return _signed(mix64_int(mix64_int(seed) + choice_index))


def _shift_right(x: Tensor, bits: int) -> Tensor:
    """Logical right shift of int64 (torch's >> is arithmetic)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def mix64(x: Tensor) -> Tensor:
    """splitmix64's finaliser on int64 tensors; int64 products wrap modulo 2**64."""
    x = (x ^ _shift_right(x, 30)) * _signed(_MIX1)
    x = (x ^ _shift_right(x, 27)) * _signed(_MIX2)
    return x ^ _shift_right(x, 31)


def stream_uniforms(stream_keys: Tensor, positions: Tensor) -> Tensor:
    """[num_seqs] float64 in [0, 1): output `position` of a splitmix64 generator seeded with the key."""
    state = stream_keys + (positions + 1) * _signed(_GOLDEN)
    return _shift_right(mix64(state), 11).to(torch.float64) * (2.0 ** -53)


def apply_temperature(logits: Tensor, temperature: Tensor) -> Tensor:
    """logits / temperature per row, as a new tensor (the untempered logits stay in use)."""
    return logits / temperature.unsqueeze(1)


def _below(target: Tensor, bound: Tensor) -> Tensor:
    """Clamp target strictly below bound, so an inverse CDF never runs past the last positive mass."""
    return torch.minimum(target, torch.nextafter(bound, torch.zeros_like(bound)))


def block_cumulative_mass(probs: Tensor, block_size: int = BLOCK_SIZE) -> Tensor:
    """[num_seqs, num_blocks] float64 prefix sums of float32 block sums; the last column is the total."""
    return block_reduce(probs, "sum", block_size).to(torch.float64).cumsum(1)


def draw_from_probs(probs: Tensor, block_cum: Tensor, uniforms: Tensor, block_size: int = BLOCK_SIZE) -> Tensor:
    """Inverse CDF over the whole vocabulary: [num_seqs] token ids, never one of probability 0.

    Two levels so the row is read once: block_cum (from block_cumulative_mass) picks the block, then a
    float64 cumsum inside that block picks the token.
    """
    total = block_cum[:, -1]
    target = _below(uniforms * total, total).unsqueeze(1)  # [num_seqs, 1]
    block = torch.searchsorted(block_cum, target, right=True).clamp_(max=block_cum.shape[1] - 1)
    mass_before = torch.where(block > 0, block_cum.gather(1, (block - 1).clamp_(min=0)), 0.0)
    values, token_ids = gather_blocks(probs, block, block_size, fill=0.0)  # [num_seqs, block_size]
    local_cum = values.to(torch.float64).cumsum(1) + mass_before
    pos = torch.searchsorted(local_cum, target, right=True)
    # A float32 block sum and the float64 cumsum inside it may round apart: past the end, take the
    # block's last positive-probability token.
    last_positive = block_size - 1 - (values.flip(1) > 0).to(torch.int8).argmax(1, keepdim=True)
    pos = torch.where(pos >= block_size, last_positive, pos)
    return token_ids.gather(1, pos).squeeze(1)


def draw_from_candidates(candidate_probs: Tensor, candidate_ids: Tensor, keep_len: Tensor, uniforms: Tensor) -> Tensor:
    """Inverse CDF over the first keep_len candidates (sorted descending): [num_seqs] token ids."""
    cum = candidate_probs.to(torch.float64).cumsum(1)  # [num_seqs, k]
    last = (keep_len - 1).unsqueeze(1)
    kept_mass = cum.gather(1, last)
    target = _below(uniforms.unsqueeze(1) * kept_mass, kept_mass)
    pos = torch.minimum(torch.searchsorted(cum, target, right=True), last)
    return candidate_ids.gather(1, pos).squeeze(1)
