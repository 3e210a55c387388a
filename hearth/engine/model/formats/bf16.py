"""`bf16`: the checkpoint's bf16 values on hearth's kernels (hearth.kernels.model.vnni_linear's bf16 records, the row
attention kernel, a step's layers in one C call).

Rows are within float32 rounding of a bf16 matmul, not bit-identical to oneDNN's, and in exchange a decode
step's keys and values equal a prefill's, so prefix-cache hits end at any token (docs/weights-and-kernels.md).
It runs only where the C kernels do: elsewhere it is refused at start with their reason.
"""

from __future__ import annotations

import torch
from torch import Tensor

from hearth.engine.model.embedding import Embedding
from hearth.engine.model.formats.placement import Placement
from hearth.engine.model.formats.weight_format import WeightFormat
from hearth.engine.model.linear import BlockQuantizedLinear, Linear, dense_linear
from hearth.kernels import cpu_isa
from hearth.kernels.model import vnni_linear
from hearth.kernels.model.c_library import flag_sets


def bf16_records_linear(weight: Tensor, bias: Tensor | None, at: Placement, output_dtype: torch.dtype) -> Linear:
    """bf16 weights in vnni_linear's records where the shape packs (tiles of 16 outputs x 32 inputs), else torch's
    dense bf16 matmul (the layer then runs on the torch path)."""
    if vnni_linear.unpackable_reason(*weight.shape) is None:
        return BlockQuantizedLinear("b16", vnni_linear.pack_b16(weight), *weight.shape, bias, output_dtype)
    return dense_linear(weight.to(at.dtype), bias, at.device)


def bf16_records_head(embed: Tensor, vocab_weight: Tensor, at: Placement) -> tuple[Embedding, Linear]:
    """The head as bf16 records with float32 logits; the lookup keeps its own plain table."""
    table = embed.to(at.dtype).contiguous()
    return Embedding(table, None, at.dtype, shares_head=False), bf16_records_linear(vocab_weight, None, at, torch.float32)


class Bf16Format(WeightFormat):
    name = "bf16"

    def levels(self) -> tuple[str, ...]:
        """The levels the C kernels are built for."""
        return tuple(level for level in cpu_isa.runnable_levels() if flag_sets(level) is not None)

    def unavailable_reason(self, device: torch.device, dtype: torch.dtype) -> str | None:
        reason = Placement.here(device, dtype).c_kernels_reason
        return None if reason is None else f"hearth.kernels.model.vnni_linear: {reason}"

    def linear(self, weight: Tensor, bias: Tensor | None, at: Placement, adds_to_residual: bool = False,
               source_bits: int | None = None) -> Linear:
        output_dtype = self.residual_dtype(at.dtype) if adds_to_residual else at.dtype
        return bf16_records_linear(weight.to(at.device), bias, at, output_dtype)

    def embedding_and_head(self, embed: Tensor, lm_head: Tensor | None, at: Placement) -> tuple[Embedding, Linear]:
        embed = embed.to(at.device)
        return bf16_records_head(embed, embed if lm_head is None else lm_head.to(at.device), at)
