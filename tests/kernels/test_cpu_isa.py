"""The one CPU capability probe: levels from the CPU's flags, capped by HEARTH_CPU_ISA, on any machine."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from hearth.kernels import cpu_isa

AVX2 = {"avx", "avx2", "fma", "f16c", "sse4_2"}
AVX512 = AVX2 | {"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_vnni", "avx512_bf16"}
AMX = AVX512 | {"amx_tile", "amx_int8", "amx_bf16"}


@pytest.fixture
def fake_cpu(monkeypatch):
    def make(machine: str, flags: set[str]) -> None:
        monkeypatch.setattr(cpu_isa.platform, "machine", lambda: machine)
        monkeypatch.setattr(cpu_isa, "cpu_flags", lambda: frozenset(flags))
        cpu_isa.detected_level.cache_clear()

    yield make
    cpu_isa.detected_level.cache_clear()


@pytest.mark.parametrize(("machine", "flags", "level"), [
    ("x86_64", set(), "generic"),
    ("x86_64", AVX2 - {"f16c"}, "generic"),  # x86-64-v3 needs all three
    ("x86_64", AVX2, "avx2"),
    ("x86_64", AVX512 - {"avx512_bf16"}, "avx2"),  # Zen 3 / Skylake-X: AVX-512 without BF16 stays avx2
    ("x86_64", AVX512, "avx512"),
    ("x86_64", AMX, "amx"),
    ("x86_64", AVX2 | {"amx_tile", "amx_int8", "amx_bf16"}, "avx2"),  # levels are a ladder
    ("aarch64", {"fp", "asimd"}, "generic"),
    ("aarch64", {"fp", "asimd", "asimddp"}, "neon"),
    ("riscv64", AMX, "generic"),
])
def test_the_level_is_the_highest_rung_whose_flags_the_cpu_has(fake_cpu, monkeypatch, machine, flags, level):
    monkeypatch.delenv(cpu_isa.ENV, raising=False)
    fake_cpu(machine, flags)
    assert cpu_isa.detected_level() == level == cpu_isa.level()


def test_the_cap_lowers_the_level_and_every_rung_below_is_included(fake_cpu, monkeypatch):
    fake_cpu("x86_64", AMX)
    for cap in ("generic", "avx2", "avx512", "amx"):
        monkeypatch.setenv(cpu_isa.ENV, cap)
        assert cpu_isa.level() == cap
        included = [name for name in cpu_isa.X86_LEVELS if cpu_isa.at_least(name)]
        assert included == list(cpu_isa.X86_LEVELS[: cpu_isa.X86_LEVELS.index(cap) + 1])
        assert not cpu_isa.at_least("neon")
    monkeypatch.setenv(cpu_isa.ENV, "avx2")
    assert "capped at 'avx2' by HEARTH_CPU_ISA" in cpu_isa.missing_for("avx512")


def test_a_cap_above_the_cpu_or_unknown_is_refused_with_the_variable_named(fake_cpu, monkeypatch):
    fake_cpu("x86_64", AVX2)
    monkeypatch.setenv(cpu_isa.ENV, "avx512")
    with pytest.raises(ValueError, match=r"HEARTH_CPU_ISA='avx512' is above what this CPU runs \(its level is 'avx2'\)"):
        cpu_isa.level()
    monkeypatch.setenv(cpu_isa.ENV, "sse9")
    with pytest.raises(ValueError, match="HEARTH_CPU_ISA='sse9' is not one of generic, avx2, avx512, amx, neon"):
        cpu_isa.level()


def test_a_missing_flag_is_named(fake_cpu, monkeypatch):
    monkeypatch.delenv(cpu_isa.ENV, raising=False)
    fake_cpu("x86_64", AVX512 - {"avx512_vnni"})
    assert cpu_isa.missing_for("avx512") == "this CPU lacks avx512_vnni (its level is 'avx2')"
    assert cpu_isa.missing_for("avx2") is None


def test_runnable_levels_run_from_generic_to_the_current_level():
    levels = cpu_isa.runnable_levels()
    assert levels[0] == "generic" and levels[-1] == cpu_isa.level()  # the cap, where HEARTH_CPU_ISA sets one


@pytest.mark.parametrize("cap", cpu_isa.runnable_levels())
def test_hearth_kernels_reports_each_family_at_or_below_the_cap(cap):
    result = subprocess.run([sys.executable, "-m", "hearth.cli", "kernels"], capture_output=True, text=True,
                            timeout=300, env={**__import__("os").environ, cpu_isa.ENV: cap})
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"CPU level: {cap}")
    ladder = cpu_isa.X86_LEVELS if cap in cpu_isa.X86_LEVELS else cpu_isa.ARM_LEVELS
    for line in lines[1:]:
        name, _, level = line.rpartition(": ")
        if not line.split(": ", 1)[1].startswith("not available"):
            assert level in ladder[: ladder.index(cap) + 1], line


def test_below_avx512_a_bf16_dense_weight_is_not_prepacked_for_onednn(monkeypatch):
    """oneDNN's bf16 reorder raises below AVX-512 BW/VL/DQ: the probe, not torch's build, decides."""
    from hearth.engine.model.linear import dense_linear

    weight = torch.randn(64, 32).to(torch.bfloat16)
    x = torch.randn(3, 32).to(torch.bfloat16)
    for cap in cpu_isa.runnable_levels():
        monkeypatch.setenv(cpu_isa.ENV, cap)
        layer = dense_linear(weight, None, torch.device("cpu"))
        assert layer.is_prepacked == (cpu_isa.at_least("avx512") and torch.backends.mkldnn.is_available())
        reference = x.float() @ weight.float().T
        torch.testing.assert_close(layer.rows_invariant(x).float(), reference, atol=0.1, rtol=0.02)


# /proc/cpuinfo as Linux writes it (abridged to the lines the probe reads and a few around them).
GRAVITON2 = """processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp ssbs
CPU implementer\t: 0x41
CPU part\t: 0xd0c
"""
RASPBERRY_PI_4 = """processor\t: 0
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm crc32 cpuid
CPU part\t: 0xd08
"""
ZEN3 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13
flags\t\t: fpu vme sse sse2 ssse3 fma cx16 sse4_1 sse4_2 avx f16c avx2 bmi2 vaes vpclmulqdq
bugs\t\t: sysret_ss_attrs
"""


@pytest.mark.parametrize(("machine", "cpuinfo", "level"), [
    ("aarch64", GRAVITON2, "neon"),       # Neoverse N1: dotprod
    ("aarch64", RASPBERRY_PI_4, "generic"),  # Cortex-A72: NEON without dotprod
    ("x86_64", ZEN3, "avx2"),
    ("aarch64", "", "generic"),
])
def test_the_level_comes_from_cpuinfo_text(monkeypatch, machine, cpuinfo, level):
    monkeypatch.delenv(cpu_isa.ENV, raising=False)
    monkeypatch.setattr(cpu_isa.platform, "machine", lambda: machine)
    monkeypatch.setattr(cpu_isa, "_read_cpuinfo", lambda: cpuinfo)
    monkeypatch.setattr(cpu_isa, "_read_hwcap", lambda: 0)
    cpu_isa.cpu_flags.cache_clear()
    cpu_isa.detected_level.cache_clear()
    try:
        assert cpu_isa.detected_level() == level
        assert cpu_isa.runnable_levels()[-1] == level
    finally:
        cpu_isa.cpu_flags.cache_clear()
        cpu_isa.detected_level.cache_clear()


@pytest.mark.parametrize(("hwcap", "level"), [(1 << 1 | 1 << 20, "neon"), (1 << 1, "generic"), (1 << 20, "generic")])
def test_on_aarch64_without_cpuinfo_features_the_hwcap_bits_decide(monkeypatch, hwcap, level):
    """Some containers hide /proc/cpuinfo's Features; AT_HWCAP's ASIMD (bit 1) and ASIMDDP (bit 20) stand in."""
    monkeypatch.delenv(cpu_isa.ENV, raising=False)
    monkeypatch.setattr(cpu_isa.platform, "machine", lambda: "aarch64")
    monkeypatch.setattr(cpu_isa, "_read_cpuinfo", lambda: "processor\t: 0\n")
    monkeypatch.setattr(cpu_isa, "_read_hwcap", lambda: hwcap)
    cpu_isa.cpu_flags.cache_clear()
    cpu_isa.detected_level.cache_clear()
    try:
        assert cpu_isa.detected_level() == level
    finally:
        cpu_isa.cpu_flags.cache_clear()
        cpu_isa.detected_level.cache_clear()


def test_neon_sits_above_generic_on_aarch64_only_and_has_its_own_build(fake_cpu, monkeypatch):
    from hearth.kernels.model import c_library

    fake_cpu("aarch64", {"fp", "asimd", "asimddp"})
    monkeypatch.setenv(cpu_isa.ENV, "neon")
    assert cpu_isa.runnable_levels() == ("generic", "neon")
    assert cpu_isa.at_least("neon") and not cpu_isa.at_least("avx2")
    assert c_library.flag_sets("neon") == [["-march=armv8.2-a+dotprod"]]
    # The aarch64 gate admits neon: what is left is the compiler's verdict (an x86 gcc refuses the flag).
    monkeypatch.setattr(c_library, "compile_source", lambda sources, flags: (_ for _ in ()).throw(
        RuntimeError(f"gcc {' '.join(flags)} failed")))
    library, reason = c_library.load_at([c_library.CSRC / "row_attention.c"], "neon")
    assert library is None and reason.startswith("building hearth/kernels/model/csrc/row_attention.c failed")
    assert "-march=armv8.2-a+dotprod" in reason
    monkeypatch.setenv(cpu_isa.ENV, "generic")
    assert c_library.load_at([c_library.CSRC / "row_attention.c"], "generic")[0] is None
