"""Token embeddings of the native forward: a dense table, an int8 table with per-row scales, or the rows of a
packed Q8_0 weight; a tied vocabulary head reads the same table (hearth.engine.model.formats)."""

from __future__ import annotations

import torch
from torch import Tensor

from hearth.kernels.model import vnni_linear


class Q8Embedding:
    """Token embeddings read from a packed Q8_0, Q5 or Q8K weight (the tied head's own): float32 rows, the weights the
    head multiplies by, exactly."""

    def __init__(self, packed: Tensor, shares_head: bool) -> None:
        self.packed, self.shares_head = packed, shares_head

    def lookup(self, token_ids: Tensor) -> Tensor:
        """token_ids [T] -> [T, hidden_size] float32."""
        if self.packed.shape[-1] == vnni_linear.Q8K_RECORD_BYTES:
            return vnni_linear.q8k_rows(self.packed, token_ids)
        if self.packed.shape[-1] == vnni_linear.Q5_RECORD_BYTES:
            return vnni_linear.q5_rows(self.packed, token_ids)
        return vnni_linear.q8_rows(self.packed, token_ids)

    @property
    def num_bytes(self) -> int:
        return self.packed.numel()


class Embedding:
    """Token embeddings, dense in the model dtype, or the int8 table the tied lm_head also reads."""

    def __init__(self, table: Tensor, scales: Tensor | None, dtype: torch.dtype, shares_head: bool) -> None:
        self.table, self.scales, self.dtype, self.shares_head = table, scales, dtype, shares_head

    def lookup(self, token_ids: Tensor) -> Tensor:
        """token_ids [T] -> [T, hidden_size] in the model dtype."""
        rows = self.table.index_select(0, token_ids)
        if self.scales is None:
            return rows
        return (rows.float() * self.scales.index_select(0, token_ids).float()[:, None]).to(self.dtype)

    @property
    def num_bytes(self) -> int:
        size = self.table.numel() * self.table.element_size()
        return size + (0 if self.scales is None else self.scales.numel() * self.scales.element_size())
