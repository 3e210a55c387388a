"""Weights that arrive already quantized (a GGUF file's Q4_0/Q4_1 tensors, its 8-bit-integer blocks), as the
formats that take them pack them (hearth.engine.model.formats.int4, .int8)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class QuantizedValues:
    """A weight already in 4-bit form (from a GGUF Q4_0/Q4_1 tensor): w = (q - 8) * scale + zero.

    q [out, in] uint8 in 0..15; scale, zero [out, in / group_size] float32."""

    q: Tensor
    scale: Tensor
    zero: Tensor
    group_size: int


@dataclass(frozen=True)
class Q8Blocks:
    """A GGUF tensor's blocks as the file holds them, integers of at most 8 bits: w = d q + minimum, with d one
    scale per `block` inputs (32, or Q6_K's 16) and minimum one per 32 (None: 0). Handed to a format that keeps
    8-bit records (WeightFormat.keeps_q8_0) so that it packs them without a float round trip: those whose
    integers span at most 5 bits in blocks of 32 (Q5_0, Q5_1, Q5_K, Q4_K, Q4_0) as Q5 records, the other symmetric
    ones (Q8_0) as Q8_0 records, the rest (Q6_K) as Q8K.

    q [out, in] int8; d [out, in / block] and minimum [out, in / 32] float32."""

    q: Tensor
    d: Tensor
    minimum: Tensor | None = None
    block: int = 32

    def __post_init__(self) -> None:
        if self.block not in (16, 32):
            raise ValueError(f"block must be 16 or 32 inputs, got {self.block}")

    @property
    def shape(self) -> tuple[int, int]:
        """[out, in], as a float weight's."""
        return tuple(self.q.shape)

    @property
    def is_symmetric(self) -> bool:
        """One scale per 32 and no minimum: Q8_0's form."""
        return self.block == 32 and self.minimum is None

    def halves(self) -> tuple[Tensor, Tensor]:
        """(scale per 16 inputs [out, in / 16], minimum per 32 [out, in / 32], zeros where none): Q8K's form."""
        scale = self.d if self.block == 16 else self.d.repeat_interleave(2, 1)
        minimum = self.minimum if self.minimum is not None else torch.zeros(self.q.shape[0], self.q.shape[1] // 32)
        return scale, minimum

    def five_bit(self) -> tuple[Tensor, Tensor, Tensor] | None:
        """(q + offset in 0..31, d, minimum - offset d), all [out, in / 32] but q: the Q5 record's form of the same
        weights, for blocks of 32 whose integers span at most 5 bits; None otherwise. The offset is 0, or for
        blocks without a minimum a power of two (Q5_0's -16..15 take 16), so offset d is exact."""
        if self.block != 32:
            return None
        low, high = int(self.q.min()), int(self.q.max())
        offset = 0 if low >= 0 else 1 << (-low - 1).bit_length()
        if high + offset > 31 or (offset and self.minimum is not None):
            return None
        minimum = self.minimum if self.minimum is not None else -offset * self.d
        return (self.q.to(torch.int16) + offset).to(torch.uint8), self.d, minimum

    def weights(self) -> Tensor:
        """float32 [out, in]: d q, then + minimum, as the gguf package dequantizes (a float16 or K-quant scale
        times an integer of at most 8 bits is exact in float32)."""
        product = self.q.float() * self.d.repeat_interleave(self.block, 1)
        return product if self.minimum is None else product + self.minimum.repeat_interleave(32, 1)

    @staticmethod
    def cat(parts: list[Q8Blocks]) -> Q8Blocks:
        """Fused rows (q/k/v or gate/up): in one form when all share it, else all in Q8K's."""
        first = parts[0]
        if all(p.block == first.block and (p.minimum is None) == (first.minimum is None) for p in parts):
            minimum = None if first.minimum is None else torch.cat([p.minimum for p in parts])
            return Q8Blocks(torch.cat([p.q for p in parts]), torch.cat([p.d for p in parts]), minimum, first.block)
        halves = [p.halves() for p in parts]
        return Q8Blocks(torch.cat([p.q for p in parts]), torch.cat([h[0] for h in halves]),
                        torch.cat([h[1] for h in halves]), 16)


def float_values(table: Tensor | Q8Blocks) -> Tensor:
    """A weight's values as a tensor, from its blocks if it came as them."""
    return table.weights() if isinstance(table, Q8Blocks) else table
