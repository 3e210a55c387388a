"""Weights that arrive already quantized (a GGUF file's Q4_0/Q4_1 tensors, its Q8_0 vocabulary tables), as the
formats that take them pack them (hearth.engine.model.formats.int4, .int8)."""

from __future__ import annotations

from dataclasses import dataclass

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
    """A GGUF Q8_0 tensor's blocks as the file holds them: w = d q per block of 32 inputs, handed to a format
    that keeps Q8_0 (WeightFormat.keeps_q8_0) so that it packs them without a float round trip.

    q [out, in] int8; d [out, in / 32] float32 (float16 values)."""

    q: Tensor
    d: Tensor

    def weights(self) -> Tensor:
        """float32 [out, in]: d q, exact (a float16 times an 8-bit integer), as the gguf package dequantizes."""
        return self.q.float() * self.d.repeat_interleave(self.q.shape[1] // self.d.shape[1], 1)


def float_values(table: Tensor | Q8Blocks) -> Tensor:
    """A weight's values as a tensor, from Q8_0 blocks if it came as them."""
    return table.weights() if isinstance(table, Q8Blocks) else table
