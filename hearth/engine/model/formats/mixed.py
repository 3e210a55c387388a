"""`mixed`: each projection of a GGUF file at its own grid. 4-bit tensors (Q4_0, Q4_1, Q4_K) are int4's records,
packed as they are; 5- to 8-bit ones are int8's records, also as the file holds them: Q5_0, Q5_1 and Q5_K
blocks in Q5 records (5-bit q, d and m per 32), Q8_0 blocks (w = d q, one d per 32) in Q8_0 records, and Q6_K
blocks in Q8K records (a scale per 16 inputs, a minimum per 32), exactly up to the float16 rounding of the
K-quants' block scales. A fused group with a finer member (a Q4_K_M's Q4_K attn_q and attn_k beside its Q6_K
attn_v) is one weight that holds each member's own blocks.

The format a file whose projections mix both chooses (a Q4_K_M: mostly Q4_K, with Q6_K or Q5_0 where
llama-quantize keeps more bits): int4 would round the finer tensors to 4 bits, int8 would store the 4-bit
ones in twice the memory. Both kinds are hearth.kernels.model.vnni_linear's blocks of 32, so the format
guarantees what int4 does (same levels, rows independent of the row count).
"""

from __future__ import annotations

from torch import Tensor

from hearth.engine.model.formats.int4 import Int4Format
from hearth.engine.model.formats.placement import Placement
from hearth.engine.model.linear import Linear


class MixedFormat(Int4Format):
    name = "mixed"

    def linear(self, weight: Tensor, bias: Tensor | None, at: Placement, adds_to_residual: bool = False,
               source_bits: int | None = None) -> Linear:
        if source_bits is not None and source_bits > 4:
            return self.q8_linear(weight, bias, at, adds_to_residual)
        return super().linear(weight, bias, at, adds_to_residual)

    def keeps_q8_0(self, is_vocabulary: bool) -> bool:
        return True  # an 8-bit source is held in 8-bit records
