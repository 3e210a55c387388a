"""`int4`: 4-bit weights per group of inputs, w = (q - 8) * scale + zero: quantized on load (min/max per group, as
GGUF's Q4_1), or a GGUF file's Q4_0/Q4_1/Q4_K tensors packed as they are.

Q4_1 blocks on hearth.kernels.model.vnni_linear where it runs and the values fit its float16 block values, else
aten's int4 kernel; a weight that does not pack as int4 (rows not in tiles of 16, inputs not in whole groups)
and the vocabulary projection are 8-bit, as in int8.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from hearth.engine.model.formats.int8 import Int8Format
from hearth.engine.model.formats.placement import Placement
from hearth.engine.model.formats.values import QuantizedValues, float_values
from hearth.engine.model.linear import BlockQuantizedLinear, Linear, int4_from_values
from hearth.kernels.model import vnni_linear
from hearth.kernels.model.weight_only import quantize_int4_values


def is_int4_packable(out_features: int, in_features: int, group_size: int) -> bool:
    """aten's int4 packing takes rows in tiles of 16 and inputs in whole groups."""
    return out_features % 16 == 0 and in_features % group_size == 0


class Int4Format(Int8Format):
    name = "int4"
    aten_kernels = ("int8", "int4")

    def keeps_q8_0(self, is_vocabulary: bool) -> bool:
        return is_vocabulary  # its projections are 4-bit, its vocabulary tables 8-bit

    def gguf_values(self, path: Path, num_heads: int, num_kv_heads: int) -> dict:
        """Every Q4_0/Q4_1/Q4_K projection in the file (hearth.engine.loading.gguf_weights.Q4Tensor)."""
        # Imported here: gguf_weights builds this package's QuantizedValues, so it imports the package.
        from hearth.engine.loading.gguf_weights import read_gguf_q4

        return read_gguf_q4(path, num_heads, num_kv_heads)

    def linear(self, weight: Tensor, bias: Tensor | None, at: Placement, adds_to_residual: bool = False,
               source_bits: int | None = None) -> Linear:
        weight = float_values(weight).to(at.device)
        if is_int4_packable(*weight.shape, self.group_size):
            q, scale, zero = quantize_int4_values(weight, self.group_size)
            return self.q4_linear(q, scale, zero, bias, self.group_size, at, adds_to_residual)
        return self.q8_linear(weight, bias, at, adds_to_residual)

    def from_values(self, parts: list[QuantizedValues], bias: Tensor | None, at: Placement,
                    adds_to_residual: bool = False) -> Linear:
        q = torch.cat([p.q for p in parts]).to(at.device)
        scale = torch.cat([p.scale for p in parts]).to(at.device)
        zero = torch.cat([p.zero for p in parts]).to(at.device)
        return self.q4_linear(q, scale, zero, bias, parts[0].group_size, at, adds_to_residual)

    def q4_linear(self, q: Tensor, scale: Tensor, zero: Tensor, bias: Tensor | None, group_size: int, at: Placement,
                  adds_to_residual: bool) -> Linear:
        """On vnni_linear when it runs here and the values fit its float16 block values (w = scale q + minimum),
        else on aten's int4 kernel."""
        if at.has_c_kernels and group_size == vnni_linear.GROUP_SIZE:
            # Exact for a GGUF Q4_1 tensor: zero = m + 8 d was exact, so zero - 8 d is m.
            minimum = zero - 8 * scale
            if vnni_linear.unpackable_reason(*q.shape, scale, minimum) is None:
                output_dtype = self.residual_dtype(at.dtype) if adds_to_residual else at.dtype
                return BlockQuantizedLinear("q4", vnni_linear.pack_q4(q, scale, minimum), *q.shape, bias, output_dtype)
        return int4_from_values(q, scale, zero, group_size, bias, at.dtype)
