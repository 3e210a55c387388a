"""A weight format: how a model's linear weights are packed, which layers apply them, and what that guarantees.

One subclass per `quantization:` name (hearth.engine.model.formats registers them; the name is parsed there once).
The model, the runner, the loader and the scheduler's regime ask the format object, never its name: like vLLM's
QuantizationConfig / LinearMethodBase pair, or ggml's per-type traits table. A format
- packs a weight: from a dense tensor (`linear`) and, where it takes them, from a GGUF file's already-quantized
  values (`gguf_values`, then `from_values`), with no float round trip;
- builds the layers it applies with (hearth.engine.model.linear, hearth.engine.model.embedding), the vocabulary
  head and the embedding included;
- states as data what it guarantees where it runs (`guarantees`), and why it cannot run somewhere
  (`unavailable_reason`: the engine refuses it at start with that reason).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from torch import Tensor

from hearth.engine.model.embedding import Embedding, Q8Embedding
from hearth.engine.model.formats.placement import Placement
from hearth.engine.model.formats.values import QuantizedValues
from hearth.engine.model.linear import Linear
from hearth.kernels import cpu_isa
from hearth.kernels.model import row_attention

# Inputs per scale/zero pair of int4 weights; 32 is GGUF's Q4 block, so its tensors load without regrouping.
# Every format carries it: tensor parallelism splits inputs between groups in every format.
GROUP_SIZES = (32, 64, 128, 256)


class PrefixHits(enum.Enum):
    """Where a prefix-cache hit may end (hearth.engine.scheduling.scheduler's two regimes)."""

    # Every row is attended on its own by the row kernel and every layer computes rows alone: a decode step's
    # keys and values are a prefill's, so hits end at any token and a finished answer's blocks are cached.
    ANY_TOKEN = "any token"
    # Prefill chunks are computed in the geometry of their whole chunk (SDPA): hits end at whole blocks of
    # computed chunks, and a prompt shorter than one chunk reuses nothing.
    CHUNK_BOUNDARY = "chunk boundary"


@dataclass(frozen=True)
class Guarantees:
    """What a format promises where it runs, for the layers it packs (a bf16 weight whose shape does not pack
    falls back to a dense GEMM: Linear.is_row_count_invariant says so per layer). Checked by
    tests/engine/model/test_weight_formats.py."""

    # Each row's result is the same at any row count and place in the batch, without row tiling calibration.
    rows_independent_of_row_count: bool
    # The CPU levels (hearth.kernels.cpu_isa.runnable_levels) it runs at on this machine.
    levels: tuple[str, ...]
    residual_dtype: torch.dtype
    prefix_hits: PrefixHits
    # Bit-identical to transformers' own forward in the same dtype.
    is_exact_against_transformers: bool


@dataclass(frozen=True)
class WeightFormat:
    name: ClassVar[str]
    is_exact_against_transformers: ClassVar[bool] = False
    # transformers' module cannot take the format's layers: the native forward must run the model.
    needs_native_forward: ClassVar[bool] = True
    group_size: int = 32

    def __post_init__(self) -> None:
        if self.group_size not in GROUP_SIZES:
            raise ValueError(f"group_size must be one of {GROUP_SIZES}, got {self.group_size}")

    # ---- what it guarantees --------------------------------------------------------------------

    def residual_dtype(self, dtype: torch.dtype) -> torch.dtype:
        """The residual stream's dtype: float32 with packed weights, as llama.cpp keeps it, which brings a 4-bit
        model's logits closer to its GGUF's own (docs/weights-and-kernels.md)."""
        return torch.float32

    def levels(self) -> tuple[str, ...]:
        return cpu_isa.runnable_levels()

    def rows_independent_of_row_count(self, device: torch.device) -> bool:
        """The C kernels and aten's int8/int4 CPU kernels compute each row on its own; aten's CUDA ones tile rows."""
        return torch.device(device).type == "cpu"

    def row_attention_reason(self, num_heads: int, num_kv_heads: int, head_dim: int, dtype: torch.dtype,
                             device: torch.device) -> str | None:
        """None when every row (decode and prefill) is attended by hearth.kernels.model.row_attention, else why
        SDPA attends them."""
        return row_attention.unavailable_reason(num_heads, num_kv_heads, head_dim, dtype, device)

    def guarantees(self, device: torch.device, dtype: torch.dtype, num_heads: int, num_kv_heads: int,
                   head_dim: int) -> Guarantees:
        """At the current CPU level, for a model of these attention heads."""
        attends_alone = self.row_attention_reason(num_heads, num_kv_heads, head_dim, dtype, device) is None
        return Guarantees(
            rows_independent_of_row_count=self.rows_independent_of_row_count(device),
            levels=self.levels(),
            residual_dtype=self.residual_dtype(dtype),
            prefix_hits=PrefixHits.ANY_TOKEN if attends_alone else PrefixHits.CHUNK_BOUNDARY,
            is_exact_against_transformers=self.is_exact_against_transformers,
        )

    def keeps_q8_0(self, is_vocabulary: bool) -> bool:
        """Whether a GGUF tensor of blocks of at most 8-bit integers (every type gguf_blocks decodes: Q8_0, Q5_0,
        Q5_1, Q4_0, Q4_1 and the K-quants; the embedding or head if `is_vocabulary`, else a projection) is held
        in int8's records: then it arrives as its blocks (values.Q8Blocks) and is packed as the file holds it
        (formats.int8._records: Q5, Q8_0 or Q8K records)."""
        return False

    def unavailable_reason(self, device: torch.device, dtype: torch.dtype) -> str | None:
        """None when the format runs here (device, activation dtype, current CPU level), else why not."""
        return None

    def place(self, device: torch.device, dtype: torch.dtype) -> Placement:
        """Where its layers are built; refused (ValueError naming the field and the reason) before any weight
        is read, where it cannot run."""
        reason = self.unavailable_reason(torch.device(device), dtype)
        if reason is not None:
            raise ValueError(f"quantization={self.name} cannot run here: {reason}; use quantization none")
        return Placement.here(device, dtype)

    # ---- packing and the layers it applies with ------------------------------------------------

    def gguf_values(self, path: Path, num_heads: int, num_kv_heads: int) -> dict:
        """HF weight name -> the GGUF tensor this format packs as it is (from_values); the rest of the model
        loads from the converted folder's float weights."""
        return {}

    def linear(self, weight: Tensor, bias: Tensor | None, at: Placement, adds_to_residual: bool = False,
               source_bits: int | None = None) -> Linear:
        """weight [out, in] as stored (any float dtype): packed from its own values, not a bf16 copy. A layer
        whose output `adds_to_residual` (o, down) hands it on in the residual dtype where its kernel can.
        `source_bits`: the bits per weight of the finest quantized tensor the weight was dequantized from (a
        GGUF's Q6_K: 6), None for float sources; only a format that keeps each tensor's own grid reads it.
        Where keeps_q8_0(False) is true, `weight` may be a GGUF's blocks (values.Q8Blocks)."""
        raise NotImplementedError

    def from_values(self, parts: list[QuantizedValues], bias: Tensor | None, at: Placement,
                    adds_to_residual: bool = False) -> Linear:
        """Fused rows of already-quantized weights (q/k/v or gate/up) from gguf_values, packed as they are."""
        raise ValueError(f"quantization={self.name} takes no already-quantized GGUF values")

    def embedding_and_head(self, embed: Tensor, lm_head: Tensor | None,
                           at: Placement) -> tuple[Embedding | Q8Embedding, Linear]:
        """The embedding and the lm_head (the embedding itself when lm_head is None: tied). Every head gives
        float32 logits, so the sampling core never sees logits rounded to the activation dtype. A format whose
        keeps_q8_0(is_vocabulary=True) may get a GGUF table as its blocks (values.Q8Blocks)."""
        raise NotImplementedError
