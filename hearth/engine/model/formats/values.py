"""Weights that arrive already quantized (a GGUF file's Q4_0/Q4_1 tensors), as the formats that take them
pack them (hearth.engine.model.formats.int4)."""

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
