"""Where a model's layers are built: the device, the activation dtype, and whether the C kernels run there."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hearth.kernels.model import vnni_linear


def c_kernels_unavailable_reason(device: torch.device, dtype: torch.dtype) -> str | None:
    """None when hearth.kernels.model.vnni_linear's records (Q4, Q8, bf16) run here, else why not. The level it
    reads is hearth.kernels.cpu_isa's (capped by HEARTH_CPU_ISA)."""
    if torch.device(device).type != "cpu":
        return f"it runs on CPUs, not {torch.device(device).type}"
    if dtype != torch.bfloat16:
        return f"it takes bfloat16 activations, not {dtype}"
    return vnni_linear.unavailable_reason()


@dataclass(frozen=True)
class Placement:
    """A format's layers are built for one device and activation dtype. c_kernels_reason is read once, when the
    model is placed, so every layer of one model takes the same path."""

    device: torch.device
    dtype: torch.dtype
    c_kernels_reason: str | None

    @classmethod
    def here(cls, device: torch.device, dtype: torch.dtype) -> Placement:
        return cls(torch.device(device), dtype, c_kernels_unavailable_reason(device, dtype))

    @property
    def has_c_kernels(self) -> bool:
        return self.c_kernels_reason is None
