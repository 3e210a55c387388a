"""`int8`: 8-bit weights quantized on load. Q8_0 blocks of 32 on hearth.kernels.model.vnni_linear where it runs and
they pack, else int8 per output channel on aten's kernel (hearth.kernels.model.weight_only). A GGUF's blocks of at
most 8-bit integers (every type but the IQ ones, Q2_K and Q3_K) are packed as the file holds them.

The vocabulary projection is kept in 8 bits here and in int4, as GGUF files commonly keep token_embd/output
in Q8_0 (the default model's does).
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor

from hearth.engine.model.embedding import Embedding, Q8Embedding
from hearth.engine.model.formats.placement import Placement
from hearth.engine.model.formats.values import Q8Blocks, float_values
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
        return self.q8_linear(weight, bias, at, adds_to_residual)

    def q8_linear(self, weight: Tensor | Q8Blocks, bias: Tensor | None, at: Placement,
                  adds_to_residual: bool) -> Linear:
        """Block records: a GGUF's blocks as they are (_records), else Q8_0 records quantized from the values."""
        if at.has_c_kernels:
            records = _records(weight, at.device)
            if records is not None:
                output_dtype = self.residual_dtype(at.dtype) if adds_to_residual else at.dtype
                return BlockQuantizedLinear(records[0], records[1], *weight.shape, bias, output_dtype)
        return int8_linear(float_values(weight).to(at.device), bias, at.dtype)

    def embedding_and_head(self, embed: Tensor | Q8Blocks, lm_head: Tensor | Q8Blocks | None,
                           at: Placement) -> tuple[Embedding | Q8Embedding, Linear]:
        """Q8_0 blocks on vnni_linear where it runs (a GGUF Q8_0 table's own blocks, packed as they are), else
        int8 per channel with float32 scales and activations. A tied table serves both the lookup and the head,
        so it is stored once."""
        vocab_weight = embed if lm_head is None else lm_head
        if at.has_c_kernels:
            records = _records(vocab_weight, at.device)
            if records is not None:
                form, packed = records
                head = BlockQuantizedLinear(form, packed, *vocab_weight.shape, None, torch.float32)
                if lm_head is None:
                    return Q8Embedding(packed, shares_head=True), head
                table = float_values(embed).to(at.device).to(at.dtype).contiguous()
                return Embedding(table, None, at.dtype, shares_head=False), head
        embed = float_values(embed).to(at.device)
        vocab_weight = embed if lm_head is None else float_values(lm_head).to(at.device)
        if lm_head is None:
            qweight, scales = quantize_int8(embed, torch.float32)
            return Embedding(qweight, scales, at.dtype, shares_head=True), Int8Linear(qweight, scales, None)
        table = embed.to(at.dtype).contiguous()
        return Embedding(table, None, at.dtype, shares_head=False), int8_linear(vocab_weight, None, torch.float32)


def _records(weight: Tensor | Q8Blocks, device: torch.device) -> tuple[str, Tensor] | None:
    """(form, packed) of vnni_linear's records, None where they do not pack (shape, float16 range): a GGUF's
    blocks as the file holds them, those of at most 5 bits per 32 inputs (Q5_0, Q5_1, Q5_K) as Q5 records (6 bits
    a weight), other symmetric ones (q in -127..127, which llama.cpp's Q8_0 quantizer always writes) as Q8_0
    records and the rest (a scale per 16: Q6_K) as Q8K ones; float values quantized to Q8_0."""
    five = weight.five_bit() if isinstance(weight, Q8Blocks) else None
    if five is not None and vnni_linear.unpackable_reason(*weight.q.shape, five[1], five[2]) is None:
        return "q5", vnni_linear.pack_q5(*(t.to(device) for t in five))
    if isinstance(weight, Q8Blocks) and not (weight.is_symmetric and int(weight.q.min()) >= -127):
        scale, minimum = weight.halves()
        if vnni_linear.unpackable_reason(*weight.q.shape, scale, minimum) is not None:
            return None
        return "q8k", vnni_linear.pack_q8k(weight.q.to(device), scale.to(device), minimum.to(device))
    if isinstance(weight, Q8Blocks):
        q, d = weight.q.to(device), weight.d.to(device)
    else:
        q, d = vnni_linear.quantize_q8(weight.to(device))
    if vnni_linear.unpackable_reason(*q.shape, d) is not None:
        return None
    return "q8", vnni_linear.pack_q8(q, d)
