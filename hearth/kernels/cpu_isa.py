"""The one CPU capability probe that every fast-path decision reads.

Levels, lowest first: `generic` (torch only, wherever torch runs), `avx2` (x86-64-v3: AVX2, FMA, F16C),
`avx512` (F/BW/VL/DQ with VNNI and BF16), `amx` (AMX tiles for int8 and bf16), and on aarch64 `neon` (with
the dot-product extension). The detected level is the highest the CPU has; HEARTH_CPU_ISA caps it, so one
machine runs every level at or below its own (a cap above the CPU's level is refused, never emulated).
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform

X86_LEVELS = ("generic", "avx2", "avx512", "amx")
ARM_LEVELS = ("generic", "neon")
LEVELS = ("generic", "avx2", "avx512", "amx", "neon")
ENV = "HEARTH_CPU_ISA"
# The CPU flags (as /proc/cpuinfo names them) each level needs, on top of the level below it.
REQUIRED = {
    "avx2": ("avx2", "fma", "f16c"),
    "avx512": ("avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_vnni", "avx512_bf16"),
    "amx": ("amx_tile", "amx_int8", "amx_bf16"),
    "neon": ("asimd", "asimddp"),
}


# aarch64 Linux's AT_HWCAP bits (asm/hwcap.h) for the flags the neon level needs: read where /proc/cpuinfo
# names no features (some containers and emulators hide them).
AT_HWCAP = 16
ARM_HWCAP_BITS = {"asimd": 1 << 1, "asimddp": 1 << 20}


def parse_cpuinfo(text: str) -> frozenset[str]:
    """The feature flags in /proc/cpuinfo's text: x86's `flags` line, aarch64's `Features` (the first CPU's)."""
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def hwcap_flags(hwcap: int) -> frozenset[str]:
    """The neon level's flags whose AT_HWCAP bits are set in `hwcap` (aarch64)."""
    return frozenset(name for name, bit in ARM_HWCAP_BITS.items() if hwcap & bit)


def _read_cpuinfo() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return f.read()
    except OSError:
        return ""


def _read_hwcap() -> int:
    try:
        getauxval = ctypes.CDLL(None).getauxval
    except (OSError, AttributeError):
        return 0
    getauxval.restype, getauxval.argtypes = ctypes.c_ulong, [ctypes.c_ulong]
    return int(getauxval(AT_HWCAP))


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (x86 `flags`, aarch64 `Features`), on aarch64 from AT_HWCAP
    where cpuinfo has none; empty elsewhere."""
    flags = parse_cpuinfo(_read_cpuinfo())
    if not flags and _ladder() == ARM_LEVELS:
        flags = hwcap_flags(_read_hwcap())
    return flags


def _ladder() -> tuple[str, ...]:
    machine = platform.machine().lower()
    if machine in ("aarch64", "arm64"):
        return ARM_LEVELS
    if machine in ("x86_64", "amd64"):
        return X86_LEVELS
    return ("generic",)


def ladder() -> tuple[str, ...]:
    """This machine's levels, lowest first: X86_LEVELS, ARM_LEVELS, or generic alone."""
    return _ladder()


@functools.lru_cache(maxsize=1)
def detected_level() -> str:
    """The highest level this CPU supports, ignoring the cap."""
    flags = cpu_flags()
    level = "generic"
    for candidate in _ladder()[1:]:
        if not all(flag in flags for flag in REQUIRED[candidate]):
            break
        level = candidate
    return level


def level() -> str:
    """The level every path runs at: the detected one, capped by HEARTH_CPU_ISA."""
    cap = os.environ.get(ENV, "").strip().lower()
    detected = detected_level()
    if not cap:
        return detected
    ladder = _ladder()
    if cap not in LEVELS:
        raise ValueError(f"{ENV}={cap!r} is not one of {', '.join(LEVELS)}")
    if cap not in ladder or ladder.index(cap) > ladder.index(detected):
        raise ValueError(f"{ENV}={cap!r} is above what this CPU runs (its level is {detected!r})")
    return cap


def at_least(name: str) -> bool:
    """Whether the current level includes `name` (avx2 includes generic, amx includes avx512, ...)."""
    if name not in LEVELS:
        raise ValueError(f"unknown CPU level {name!r}; one of {', '.join(LEVELS)}")
    ladder = _ladder()
    current = level()
    return name in ladder and ladder.index(name) <= ladder.index(current)


def runnable_levels() -> tuple[str, ...]:
    """Every level this machine can run at or below the current one (HEARTH_CPU_ISA's cap, else the CPU's),
    lowest first: what tests parametrize over."""
    ladder = _ladder()
    return ladder[: ladder.index(level()) + 1]


def missing_for(name: str) -> str | None:
    """None when the current level includes `name`, else why not (for unavailable_reason messages)."""
    if at_least(name):
        return None
    detected = detected_level()
    if detected != level():
        return f"the CPU level is capped at {level()!r} by {ENV} (this CPU runs {detected!r}); {name!r} is above it"
    missing = [f for lv in _ladder()[1:] if lv in REQUIRED for f in REQUIRED[lv] if f not in cpu_flags()]
    if name not in _ladder():
        return f"{name!r} is not a level of {platform.machine()} CPUs"
    wanted = [f for f in REQUIRED[name] if f not in cpu_flags()] or missing
    return f"this CPU lacks {', '.join(wanted)} (its level is {detected!r})"
