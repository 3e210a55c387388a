"""Builds the native forward's linear layers and vocabulary table in the model's quantization mode
(hearth.engine.model.linear holds the layer kinds)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import Tensor

from hearth.engine.model.embedding import Embedding, Q8Embedding
from hearth.engine.model.linear import (
    BlockQuantizedLinear,
    Int8Linear,
    Linear,
    dense_linear,
    int4_from_values,
    int8_linear,
)
from hearth.kernels.model import vnni_linear
from hearth.kernels.model.weight_only import quantize_int4_values, quantize_int8, unsupported_reason

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class QuantizedValues:
    """A weight already in 4-bit form (from a GGUF Q4_0/Q4_1 tensor): w = (q - 8) * scale + zero.

    q [out, in] uint8 in 0..15; scale, zero [out, in / group_size] float32."""

    q: Tensor
    scale: Tensor
    zero: Tensor
    group_size: int


def is_int4_packable(out_features: int, in_features: int, group_size: int) -> bool:
    """aten's int4 packing takes rows in tiles of 16 and inputs in whole groups."""
    return out_features % 16 == 0 and in_features % group_size == 0


def residual_dtype(mode: str, dtype: torch.dtype) -> torch.dtype:
    """The residual stream's dtype: the activation dtype without quantization, as transformers keeps it (bf16
    stays exact against it); float32 with quantized weights, as llama.cpp keeps it, which brings a 4-bit
    model's logits closer to its GGUF's own (docs/weights-and-kernels.md)."""
    return dtype if mode == "none" else torch.float32


def vnni_unavailable_reason(device: torch.device, dtype: torch.dtype) -> str | None:
    """None when quantized layers run on hearth.kernels.model.vnni_linear here, else why they run on aten's kernels."""
    if torch.device(device).type != "cpu":
        return f"it runs on CPUs, not {torch.device(device).type}"
    if dtype != torch.bfloat16:
        return f"it takes bfloat16 activations, not {dtype}"
    return vnni_linear.unavailable_reason()


class LinearFactory:
    """Builds each layer in the model's quantization mode; activations run in `dtype`.

    bf16 layers and head run on hearth.kernels.model.vnni_linear's bf16 records (the mode is refused where it cannot run).
    int4 layers and the 8-bit vocabulary head run on hearth.kernels.model.vnni_linear where it can (a CPU with
    AVX2 or above, bf16 activations), otherwise on aten's int4 and int8 kernels (bf16 or float32 activations)."""

    def __init__(self, quantization, dtype: torch.dtype, device: torch.device) -> None:
        self.mode, self.group_size = quantization.mode, quantization.group_size
        self.dtype, self.device = dtype, device
        self.residual_dtype = residual_dtype(self.mode, dtype)
        self.vnni_reason = (vnni_unavailable_reason(device, dtype) if self.mode != "none"
                            else "weights are not quantized")
        if self.mode == "bf16" and self.vnni_reason is not None:
            raise ValueError(f"quantization=bf16 cannot run here (hearth.kernels.model.vnni_linear: {self.vnni_reason}); "
                             f"use quantization none")
        if self.mode in ("int8", "int4") and self.vnni_reason is not None:
            logger.info("quantized layers run on aten's kernels: hearth.kernels.model.vnni_linear does not run here (%s)",
                        self.vnni_reason)
        # Refused before any weight is read: quantized modes also pack the head and odd layers as int8.
        for mode in (("int8", "int4") if self.mode == "int4" else (self.mode,) if self.mode == "int8" else ()):
            reason = unsupported_reason(mode, torch.device(device), dtype)
            if reason is not None:
                raise ValueError(f"quantization={self.mode} cannot run here: {reason}; use quantization none")

    def linear(self, weight: Tensor, bias: Tensor | None, adds_to_residual: bool = False) -> Linear:
        """weight [out, in] as stored (any float dtype): quantized from its own values, not a bf16 copy."""
        weight = weight.to(self.device)
        if self.mode == "int4" and is_int4_packable(*weight.shape, self.group_size):
            return self._int4(*quantize_int4_values(weight, self.group_size), bias, adds_to_residual=adds_to_residual)
        if self.mode == "bf16":
            return self._bf16(weight, bias, self.residual_dtype if adds_to_residual else self.dtype)
        if self.mode != "none":  # int4 packs only whole 16-row tiles of whole groups: int8 for the rest
            return self._int8(weight, bias, adds_to_residual)
        return dense_linear(weight.to(self.dtype), bias, self.device)

    def _int8(self, weight: Tensor, bias: Tensor | None, adds_to_residual: bool) -> Linear:
        """8-bit weights: Q8_0 blocks of 32 on hearth.kernels.model.vnni_linear when it runs here and they pack, else int8
        per output channel on aten's kernel."""
        if self.vnni_reason is None:
            q, d = vnni_linear.quantize_q8(weight)
            if vnni_linear.unpackable_reason(*q.shape, d) is None:
                output_dtype = self.residual_dtype if adds_to_residual else self.dtype
                return BlockQuantizedLinear("q8", vnni_linear.pack_q8(q, d), *q.shape, bias, output_dtype)
        return int8_linear(weight, bias, self.dtype)

    def _bf16(self, weight: Tensor, bias: Tensor | None, output_dtype: torch.dtype) -> Linear:
        """bf16 weights in hearth.kernels.model.vnni_linear's records where the shape packs (tiles of 16 outputs x 32
        inputs), else torch's dense bf16 matmul (the layer then runs on the torch path)."""
        if vnni_linear.unpackable_reason(*weight.shape) is None:
            return BlockQuantizedLinear("b16", vnni_linear.pack_b16(weight), *weight.shape, bias, output_dtype)
        return dense_linear(weight.to(self.dtype), bias, self.device)

    def from_q4(self, parts: list[QuantizedValues], bias: Tensor | None, adds_to_residual: bool = False) -> Linear:
        """Fused rows of already-4-bit weights (q/k/v or gate/up), packed as they are. A layer whose output
        `adds_to_residual` (o, down) hands it on in the residual dtype where its kernel can."""
        q = torch.cat([p.q for p in parts]).to(self.device)
        scale = torch.cat([p.scale for p in parts]).to(self.device)
        zero = torch.cat([p.zero for p in parts]).to(self.device)
        return self._int4(q, scale, zero, bias, parts[0].group_size, adds_to_residual)

    def _int4(self, q: Tensor, scale: Tensor, zero: Tensor, bias: Tensor | None, group_size: int | None = None,
              adds_to_residual: bool = False) -> Linear:
        """w = (q - 8) * scale + zero: on hearth.kernels.model.vnni_linear when it runs here and the values fit its float16
        block values (w = scale q + minimum), else on aten's int4 kernel."""
        group_size = group_size or self.group_size
        if self.vnni_reason is None and group_size == vnni_linear.GROUP_SIZE:
            # Exact for a GGUF Q4_1 tensor: zero = m + 8 d was exact, so zero - 8 d is m.
            minimum = zero - 8 * scale
            if vnni_linear.unpackable_reason(*q.shape, scale, minimum) is None:
                output_dtype = self.residual_dtype if adds_to_residual else self.dtype
                return BlockQuantizedLinear("q4", vnni_linear.pack_q4(q, scale, minimum), *q.shape, bias, output_dtype)
        return int4_from_values(q, scale, zero, group_size, bias, self.dtype)

    def embedding_and_head(self, embed: Tensor, lm_head: Tensor | None) -> tuple[Embedding, Linear]:
        """The embedding and the lm_head (the embedding itself when lm_head is None: tied). Every head gives
        float32 logits, so the sampling core never sees logits rounded to the activation dtype.

        Quantized modes keep the vocabulary projection in 8 bits, as GGUF files commonly keep
        token_embd/output in Q8_0 (the default model's does): Q8_0 blocks on hearth.kernels.model.vnni_linear where it runs
        (a Q8_0 table's own values, given back exactly from its float32 dequantization), else int8 per channel
        with float32 scales and activations. Unquantized bf16 heads run as bf16 records (float32 sums) where
        those kernels run, else widened to float32 per call. A tied table serves both the lookup and the head
        where the head's format allows, so it is stored once."""
        embed = embed.to(self.device)
        vocab_weight = embed if lm_head is None else lm_head.to(self.device)
        records_run_here = vnni_unavailable_reason(self.device, self.dtype) is None
        if self.mode == "bf16" or (self.mode == "none" and self.dtype == torch.bfloat16 and records_run_here
                                   and vnni_linear.unpackable_reason(*vocab_weight.shape) is None):
            # The head as bf16 records with float32 logits; the lookup keeps its own plain table.
            table = embed.to(self.dtype).contiguous()
            head = self._bf16(vocab_weight, None, torch.float32)
            return Embedding(table, None, self.dtype, shares_head=False), head
        if self.mode != "none" and self.vnni_reason is None:
            q, d = vnni_linear.quantize_q8(vocab_weight)
            if vnni_linear.unpackable_reason(*q.shape, d) is None:
                packed = vnni_linear.pack_q8(q, d)
                head = BlockQuantizedLinear("q8", packed, *q.shape, None, torch.float32)
                if lm_head is None:
                    return Q8Embedding(packed, shares_head=True), head
                return Embedding(embed.to(self.dtype).contiguous(), None, self.dtype, shares_head=False), head
        if self.mode != "none" and lm_head is None:
            qweight, scales = quantize_int8(embed, torch.float32)
            return Embedding(qweight, scales, self.dtype, shares_head=True), Int8Linear(qweight, scales, None)
        table = embed.to(self.dtype).contiguous()
        if lm_head is None:
            head = dense_linear(table, None, self.device, torch.float32)
            # A prepacked or widened head is a copy: the lookup table is then a second tensor.
            return Embedding(table, None, self.dtype, shares_head=head.weight is table), head
        head = (int8_linear(lm_head.to(self.device), None, torch.float32) if self.mode != "none"
                else dense_linear(lm_head.to(self.dtype), None, self.device, torch.float32))
        return Embedding(table, None, self.dtype, shares_head=False), head
