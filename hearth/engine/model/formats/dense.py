"""`none`: the weights as loaded, on torch's kernels (oneDNN GEMMs, SDPA, a residual in the activation dtype).

That is what keeps it bit-exact against transformers, and why its batch invariance comes from calling the
GEMMs one row at a time (hearth.engine.model.row_tiling) and its prefill from whole-chunk geometry
(hearth.engine.model.attention) rather than from kernels that compute each row alone.
"""

from __future__ import annotations

import torch
from torch import Tensor

from hearth.engine.model.embedding import Embedding
from hearth.engine.model.formats.bf16 import bf16_records_head
from hearth.engine.model.formats.placement import Placement
from hearth.engine.model.formats.weight_format import WeightFormat
from hearth.engine.model.linear import Linear, dense_linear
from hearth.kernels.model import vnni_linear


class DenseFormat(WeightFormat):
    name = "none"
    is_exact_against_transformers = True
    needs_native_forward = False

    def residual_dtype(self, dtype: torch.dtype) -> torch.dtype:
        """The activation dtype, as transformers keeps it (bf16 stays exact against it)."""
        return dtype

    def rows_independent_of_row_count(self, device: torch.device) -> bool:
        """oneDNN's and MKL's GEMMs tile rows by the row count."""
        return False

    def row_attention_reason(self, num_heads: int, num_kv_heads: int, head_dim: int, dtype: torch.dtype,
                             device: torch.device) -> str | None:
        return f"quantization {self.name}: decode rows stay exact against transformers (SDPA)"

    def linear(self, weight: Tensor, bias: Tensor | None, at: Placement, adds_to_residual: bool = False,
               source_bits: int | None = None) -> Linear:
        return dense_linear(weight.to(at.device).to(at.dtype), bias, at.device)

    def embedding_and_head(self, embed: Tensor, lm_head: Tensor | None, at: Placement) -> tuple[Embedding, Linear]:
        """A bf16 head as bf16 records (float32 sums) where those kernels run and it packs, else widened to
        float32 per call. A tied table serves both the lookup and the head where the head keeps it as it is."""
        embed = embed.to(at.device)
        vocab_weight = embed if lm_head is None else lm_head.to(at.device)
        if (at.dtype == torch.bfloat16 and at.has_c_kernels
                and vnni_linear.unpackable_reason(*vocab_weight.shape) is None):
            return bf16_records_head(embed, vocab_weight, at)
        table = embed.to(at.dtype).contiguous()
        if lm_head is None:
            head = dense_linear(table, None, at.device, torch.float32)
            # A prepacked or widened head is a copy: the lookup table is then a second tensor.
            return Embedding(table, None, at.dtype, shares_head=head.weight is table), head
        return (Embedding(table, None, at.dtype, shares_head=False),
                dense_linear(vocab_weight.to(at.dtype), None, at.device, torch.float32))
