"""The neon build (csrc/simd_neon.h) gives the x86 levels' bits, checked without an ARM machine: the kernels
and a small driver (csrc_driver/driver.c: fixed inputs, the outputs' raw bytes) are built for each x86 level
this machine runs with c_library's flags, and cross-compiled for aarch64 with the neon level's flags and run
under qemu-aarch64. `make check-arm` installs the cross compiler and qemu (Debian: gcc-aarch64-linux-gnu,
qemu-user) and runs this file; there a missing tool fails instead of skipping (HEARTH_REQUIRE_ARM_CHECK)."""

from __future__ import annotations

import os
import platform
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from hearth.kernels.model import c_library
from tests.conftest import C_KERNEL_LEVELS

DRIVER = [Path(__file__).resolve().parent / "csrc_driver" / name for name in ("driver.c", "primitives.c")]
KERNELS = ["vnni_linear.c", "bf16_linear.c", "fused_layer.c", "decode_layers.c"]
CROSS_CC, QEMU = "aarch64-linux-gnu-gcc", "qemu-aarch64"
# Every case the driver writes; the test fails if one goes missing.
CASES = ["q4_linear_f32", "q4_linear_bf16", "q5_linear_f32", "q5_linear_bf16", "q8_linear_f32", "q8_linear_bf16", "q8k_linear_f32",
         "q8k_linear_bf16", "b16_linear_f32", "b16_linear_bf16",
         "rms_norm_bf16", "silu_mul_bf16", "attention_g2_d64_b16", "attention_g8_d128_b64", "attention_g3_d96_b32",
         "decode_layers_hidden", "decode_layers_kv",
         # primitives.c: each primitive's own result, where a kernel's bf16 rounding would hide a last bit
         "prim_sums_and_maxima", "prim_float_lanes", "prim_exp_round_scale", "prim_bf16_f16", "prim_bf16_stores",
         "prim_integers"]


def _missing_tools() -> str | None:
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return f"compares aarch64 with the x86 levels; this machine is {platform.machine()}"
    if not C_KERNEL_LEVELS:
        return "no x86 C kernel level runs here"
    missing = [tool for tool in (CROSS_CC, QEMU, c_library.compiler() or "gcc") if shutil.which(tool) is None]
    if missing:
        return (f"{', '.join(missing)} not found: `make check-arm` installs them (Debian: apt-get install "
                f"gcc-aarch64-linux-gnu qemu-user)")
    return None


MISSING = _missing_tools()
if MISSING and os.environ.get("HEARTH_REQUIRE_ARM_CHECK"):
    pytest.fail(f"HEARTH_REQUIRE_ARM_CHECK is set but {MISSING}", pytrace=False)
pytestmark = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")


def _build(cc: str, flags: list[str], target: Path) -> Path:
    # c_library's flags minus -shared: the same code generation, as an executable.
    base = [flag for flag in c_library.BASE_FLAGS if flag != "-shared"]
    sources = [*DRIVER, *(c_library.CSRC / name for name in KERNELS)]
    result = subprocess.run([cc, *base, *flags, "-I", str(c_library.CSRC), "-o", str(target), *map(str, sources),
                             "-lm"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{cc} {' '.join(flags)} failed:\n{result.stderr[-3000:]}"
    return target


def _run(command: list[str], output: Path) -> dict[str, bytes]:
    result = subprocess.run([*command, str(output)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stderr[-3000:]}"
    data, cases, offset = output.read_bytes(), {}, 0
    while offset < len(data):
        name = data[offset:offset + 32].rstrip(b"\0").decode()
        (count,) = struct.unpack_from("<Q", data, offset + 32)
        cases[name] = data[offset + 40:offset + 40 + count]
        offset += 40 + count
    return cases


@pytest.fixture(scope="module")
def outputs(tmp_path_factory) -> dict[str, dict[str, bytes]]:
    """Each build's cases: the x86 levels' and neon's (under qemu)."""
    folder = tmp_path_factory.mktemp("arm_cross_check")
    results = {}
    for level in C_KERNEL_LEVELS:
        # c_library's first flag set; at amx the tile paths are built but not entered (set_amx is never called).
        binary = _build(c_library.compiler(), c_library.flag_sets(level)[0], folder / f"driver-{level}")
        results[level] = _run([str(binary)], folder / f"out-{level}.bin")
    binary = _build(CROSS_CC, [*c_library.flag_sets("neon")[0], "-static"], folder / "driver-neon")
    results["neon"] = _run([QEMU, str(binary)], folder / "out-neon.bin")
    return results


def _values(name: str, raw: bytes) -> np.ndarray:
    """float32 for the float32 cases, int32 for the integer ones, bf16 widened exactly otherwise."""
    if name == "prim_integers":
        return np.frombuffer(raw, dtype=np.int32)
    if name.endswith(("_f32", "_hidden")) or (name.startswith("prim_") and name != "prim_bf16_stores"):
        return np.frombuffer(raw, dtype=np.float32)
    return (np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


@pytest.mark.parametrize("level", C_KERNEL_LEVELS)
def test_neon_gives_each_x86_levels_bits_for_every_kernel(outputs, level):
    x86, neon = outputs[level], outputs["neon"]
    assert list(x86) == list(neon) == CASES
    differing = []
    for name in CASES:
        if x86[name] != neon[name]:
            a, b = _values(name, x86[name]), _values(name, neon[name])
            where = np.flatnonzero(a.view(np.uint32) != b.view(np.uint32))
            differing.append(f"{name}: {where.size} of {a.size} values differ, first at {where[0]} "
                             f"({a[where[0]]!r} at {level}, {b[where[0]]!r} at neon)")
    assert not differing, "\n".join(differing)


def test_the_compared_outputs_are_finite_and_varied(outputs):
    """Identical bytes prove little if they were all zero or NaN: every case holds finite, varied values."""
    for name, raw in outputs["neon"].items():
        values = _values(name, raw)
        assert np.isfinite(values).all(), name
        assert np.unique(values).size > min(values.size // 4, 256), name
