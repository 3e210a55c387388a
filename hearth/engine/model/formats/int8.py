"""`int8`: 8-bit weights quantized on load. Q8_0 blocks of 32 on hearth.kernels.model.vnni_linear where it runs and
they pack, else int8 per output channel on aten's kernel (hearth.kernels.model.weight_only).

The vocabulary projection is kept in 8 bits here and in int4, as GGUF files commonly keep token_embd/output
in Q8_0 (the default model's does).
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor

from hearth.engine.model.embedding import Embedding, Q8Embedding
from hearth.engine.model.formats.placement import Placement
from hearth.engine.model.formats.weight_format import WeightFormat
from hearth.engine.model.linear import BlockQuantizedLinear, Int8Linear, Linear, int8_linear
from hearth.kernels.model import vnni_linear
from hearth.kernels.model.weight_only import quantize_int8, unsupported_reason

logger = logging.getLogger(__name__)


class Int8Format(WeightFormat):
    name = "int8"
    # The aten kernels the format falls back to (below the C kernels' level, off CPU): each must exist here.
    aten_kernels: tuple[str, ...] = ("int8",)

    def keeps_q8_0(self, is_vocabulary: bool) -> bool:
        return True

    def unavailable_reason(self, device: torch.device, dtype: torch.dtype) -> str | None:
        for kernel in self.aten_kernels:
            reason = unsupported_reason(kernel, torch.device(device), dtype)
            if reason is not None:
                return reason
        return None

    def place(self, device: torch.device, dtype: torch.dtype) -> Placement:
        at = super().place(device, dtype)
        if not at.has_c_kernels:
            logger.info("quantized layers run on aten's kernels: hearth.kernels.model.vnni_linear does not run here (%s)",
                        at.c_kernels_reason)
        return at

    def linear(self, weight: Tensor, bias: Tensor | None, at: Placement, adds_to_residual: bool = False,
               source_bits: int | None = None) -> Linear:
        return self.q8_linear(weight.to(at.device), bias, at, adds_to_residual)

    def q8_linear(self, weight: Tensor, bias: Tensor | None, at: Placement, adds_to_residual: bool) -> Linear:
        if at.has_c_kernels:
            q, d = vnni_linear.quantize_q8(weight)
            if vnni_linear.unpackable_reason(*q.shape, d) is None:
                output_dtype = self.residual_dtype(at.dtype) if adds_to_residual else at.dtype
                return BlockQuantizedLinear("q8", vnni_linear.pack_q8(q, d), *q.shape, bias, output_dtype)
        return int8_linear(weight, bias, at.dtype)

    def embedding_and_head(self, embed: Tensor, lm_head: Tensor | None,
                           at: Placement) -> tuple[Embedding | Q8Embedding, Linear]:
        """Q8_0 blocks on vnni_linear where it runs (a Q8_0 table's own values, given back exactly from its
        float32 dequantization), else int8 per channel with float32 scales and activations. A tied table serves
        both the lookup and the head, so it is stored once."""
        embed = embed.to(at.device)
        vocab_weight = embed if lm_head is None else lm_head.to(at.device)
        if at.has_c_kernels:
            q, d = vnni_linear.quantize_q8(vocab_weight)
            if vnni_linear.unpackable_reason(*q.shape, d) is None:
                packed = vnni_linear.pack_q8(q, d)
                head = BlockQuantizedLinear("q8", packed, *q.shape, None, torch.float32)
                if lm_head is None:
                    return Q8Embedding(packed, shares_head=True), head
                return Embedding(embed.to(at.dtype).contiguous(), None, at.dtype, shares_head=False), head
        if lm_head is None:
            qweight, scales = quantize_int8(embed, torch.float32)
            return Embedding(qweight, scales, at.dtype, shares_head=True), Int8Linear(qweight, scales, None)
        table = embed.to(at.dtype).contiguous()
        return Embedding(table, None, at.dtype, shares_head=False), int8_linear(vocab_weight, None, torch.float32)
