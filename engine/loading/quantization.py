"""How a model's linear weights are stored: as loaded (none), int8 per channel, or int4 per group.

Chosen per model in models.yaml (`quantization:`) or with `--quantization`. Kernels and measurements:
kernels/weight_only.py and the README's 'Quantization'.
"""

from __future__ import annotations

from dataclasses import dataclass

QUANTIZATION_MODES = ("none", "int8", "int4")
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
    def is_quantized(self) -> bool:
        return self.mode != "none"
