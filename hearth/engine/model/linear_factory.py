"""A model's weight format placed on its device and activation dtype: builds the native forward's linear layers,
vocabulary head and embedding in that format (hearth.engine.model.formats; hearth.engine.model.linear holds the
layer kinds)."""

from __future__ import annotations

import torch
from torch import Tensor

from hearth.engine.model.formats import QuantizedValues, WeightFormat
from hearth.engine.model.linear import Linear


class LinearFactory:
    """Refused (ValueError naming the field and the reason) before any weight is read, where the format cannot
    run on `device` with `dtype` activations at the current CPU level."""

    def __init__(self, weight_format: WeightFormat, dtype: torch.dtype, device: torch.device) -> None:
        self.weight_format = weight_format
        self.dtype, self.device = dtype, device
        self.placement = weight_format.place(device, dtype)

    def linear(self, weight: Tensor, bias: Tensor | None, adds_to_residual: bool = False,
               source_bits: int | None = None) -> Linear:
        """weight [out, in] as stored (any float dtype): packed from its own values, not a bf16 copy.
        `source_bits`: WeightFormat.linear's."""
        return self.weight_format.linear(weight, bias, self.placement, adds_to_residual, source_bits)

    def from_values(self, parts: list[QuantizedValues], bias: Tensor | None, adds_to_residual: bool = False) -> Linear:
        """Fused rows of already-quantized GGUF weights (q/k/v or gate/up), packed as they are."""
        return self.weight_format.from_values(parts, bias, self.placement, adds_to_residual)

    def embedding_and_head(self, embed: Tensor, lm_head: Tensor | None):
        return self.weight_format.embedding_and_head(embed, lm_head, self.placement)
