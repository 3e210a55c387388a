"""Which instruction level each kernel family runs at on this machine, or why it does not run.

`hearth kernels --build` (run by `make setup`) builds the C kernels through this, `hearth serve` logs it at
start, and /health reports it, so a CPU or compiler that cannot build them is never a silent slow path.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hearth.kernels import cpu_isa


@dataclass(frozen=True)
class KernelFamily:
    name: str
    level: str | None  # the level it runs at; None when it does not run here
    reason: str | None  # why it does not run (None when it runs)
    build_failed: bool = False  # it has a build for this level and the compiler is missing or failed

    def line(self) -> str:
        if self.level is not None:
            return f"{self.name}: {self.level}"
        return f"{self.name}: not available ({self.reason})"

    def as_dict(self) -> dict:
        return {"name": self.name, "level": self.level, "reason": self.reason, "build_failed": self.build_failed}


def kernel_families() -> list[KernelFamily]:
    """Every family, building the C ones (cached under the hearth cache directory) if they are not built."""
    from hearth.kernels.model import row_attention, vnni_linear
    from hearth.kernels.model.c_library import flag_sets

    level = cpu_isa.level()
    has_build = flag_sets(level) is not None  # then a reason is the compiler's (c_library.load_at)
    families = []
    for name, reason in (("packed linear and decode layers (hearth/kernels/model/csrc)", vnni_linear._library()[1]),
                         ("row attention over the paged KV cache", row_attention._library()[1])):
        families.append(KernelFamily(name, None if reason else level, reason, reason is not None and has_build))
    prepack = torch.backends.mkldnn.is_available() and cpu_isa.at_least("avx512")
    families.append(KernelFamily("oneDNN prepacked bf16 linear", "avx512" if prepack else None,
                                 None if prepack else (cpu_isa.missing_for("avx512") or "torch has no oneDNN")))
    families.append(KernelFamily("sampling core (torch ops)", "generic", None))
    return families


def report_lines() -> list[str]:
    detected, current = cpu_isa.detected_level(), cpu_isa.level()
    head = f"CPU level: {current}" + (f" (capped by {cpu_isa.ENV}; the CPU runs {detected})" if current != detected else "")
    return [head, *(family.line() for family in kernel_families())]


def report() -> dict:
    return {"cpu_level": cpu_isa.level(), "cpu_detected_level": cpu_isa.detected_level(),
            "families": [family.as_dict() for family in kernel_families()]}
