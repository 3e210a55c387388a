"""How a model's linear weights are stored: as loaded on torch's kernels (none), bf16 on hearth's kernels
(bf16), int8, or int4 per group.

`none` keeps transformers' own numerics: its bf16 matmuls and attention are torch's (oneDNN, SDPA), exact
against transformers. `bf16` keeps the same bf16 values but runs them on the kernels the quantized modes use
(hearth.kernels.model.vnni_linear's bf16 records, the row attention kernel, a step's layers in one C call): rows within
float32 rounding of a bf16 matmul, not bit-identical to oneDNN's, and in exchange a decode step's keys
and values equal a prefill's, so prefix-cache hits end at any token (docs/weights-and-kernels.md).

Chosen per model in models.yaml (`quantization:`) or with `--quantization`. Kernels and measurements:
kernels/model/weight_only.py and docs/weights-and-kernels.md.
"""

from __future__ import annotations

from dataclasses import dataclass

QUANTIZATION_MODES = ("none", "bf16", "int8", "int4")
INT4_GROUP_SIZES = (32, 64, 128, 256)


@dataclass(frozen=True)
class Quantization:
    mode: str = "none"
    # int4 only: inputs per scale/zero pair. 32 is GGUF's Q4 block, so its tensors load without regrouping.
    group_size: int = 32

    def __post_init__(self) -> None:
        if self.mode not in QUANTIZATION_MODES:
            raise ValueError(f"quantization must be one of {QUANTIZATION_MODES}, got {self.mode!r}")
        if self.group_size not in INT4_GROUP_SIZES:
            raise ValueError(f"quantization group_size must be one of {INT4_GROUP_SIZES}, got {self.group_size}")

    @property
    def needs_native_forward(self) -> bool:
        """Every mode but `none` runs on hearth's own layers (transformers' module cannot take them)."""
        return self.mode != "none"
