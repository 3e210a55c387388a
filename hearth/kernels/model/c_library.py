"""C kernels (hearth/kernels/model/csrc/) built at set-up (`hearth kernels --build`) or on first use, with the system C compiler and loaded with ctypes.

Each source is built once per source text, compiler and flags into the hearth cache directory, and runs
on torch's own OpenMP runtime (libgomp.so.1, already loaded by torch), with the thread count passed in.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from hearth.kernels import cpu_isa

CSRC = Path(__file__).resolve().parent / "csrc"
# -ffp-contract=off: the compiler never fuses a plain C a * b + c into an FMA (gcc's default is "fast", and
# whether it fuses depends on each level's flags), so a kernel's float operations are the ones its text and
# the primitives (csrc/simd_*.h, whose FMAs are explicit intrinsics) say, the same at every level.
BASE_FLAGS = ["-O3", "-ffp-contract=off", "-fopenmp", "-shared", "-fPIC"]
NO_COMPILER_HINT = ("install gcc (Debian/Ubuntu: `apt-get install gcc`, Fedora: `dnf install gcc`, "
                    "Alpine: `apk add build-base`) or set $CC")


# The compiler flags of each level's build (hearth.kernels.cpu_isa's levels; csrc/simd.h picks the primitives
# from them). amx adds its tile instructions where the compiler knows them, and falls back to avx512's.
LEVEL_FLAGS = {
    "avx2": ["-mavx2", "-mfma", "-mf16c"],
    "avx512": ["-mavx2", "-mfma", "-mf16c", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx512vnni",
               "-mavx512bf16"],
    "neon": ["-march=armv8.2-a+dotprod"],  # csrc/simd_neon.h (sdot)
}
AMX_FLAGS = ["-mamx-tile", "-mamx-int8", "-mamx-bf16"]
# The lowest level with a build, on x86-64 and on aarch64: below it (generic) no C kernel runs.
LOWEST_LEVEL = "avx2"
LOWEST_ARM_LEVEL = "neon"


def flag_sets(level: str) -> list[list[str]] | None:
    """The flag sets to try, best first, for a build at `level`; None below the lowest level built (avx2)."""
    if level == "amx":
        return [LEVEL_FLAGS["avx512"] + AMX_FLAGS, LEVEL_FLAGS["avx512"]]
    return [LEVEL_FLAGS[level]] if level in LEVEL_FLAGS else None


def cache_dir() -> Path:
    # The same directory as hearth.engine.loading.registry.cache_dir (kernels/ imports nothing of hearth's).
    return Path(os.environ.get("HEARTH_CACHE") or Path.home() / ".cache" / "hearth").expanduser()


def compiler() -> str | None:
    return os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")


def compile_source(sources: list[Path], flags: list[str]) -> Path:
    """The shared library of `sources` (one library) built with `flags` (BASE_FLAGS added); RuntimeError when it
    fails."""
    cc = compiler()
    if cc is None:
        raise RuntimeError(f"no C compiler: {NO_COMPILER_HINT}")
    flags = BASE_FLAGS + flags
    # The sources and every header beside them (they include them).
    headers = sorted(CSRC.glob("*.h"))
    text = b"".join(path.read_bytes() for path in [*sources, *headers])
    digest = hashlib.sha256(text + " ".join([cc, *flags]).encode()).hexdigest()[:16]
    target = cache_dir() / "kernels" / f"{sources[0].stem}-{digest}.so"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Compiled beside the target and renamed: processes starting together (tensor-parallel ranks) never load
    # a half-written file.
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        built = Path(tmp) / target.name
        try:
            result = subprocess.run([cc, *flags, "-o", str(built), *map(str, sources)], capture_output=True,
                                    text=True, timeout=120)
        except (OSError, subprocess.SubprocessError) as exc:
            raise RuntimeError(f"{cc} failed: {exc}") from exc
        if result.returncode != 0:
            raise RuntimeError(f"{cc} failed: {result.stderr.strip()[-500:]}")
        os.replace(built, target)
    return target


def load_at(sources: list[Path], level: str) -> tuple[ctypes.CDLL | None, str | None]:
    """(the library of `sources` built for CPU level `level`, None), or (None, why it cannot run: a level below
    the architecture's lowest (LOWEST_LEVEL, LOWEST_ARM_LEVEL), no compiler, or a failed build). Where a build
    exists for the level (flag_sets), the reason is always a compiler's."""
    reason = cpu_isa.missing_for(LOWEST_ARM_LEVEL if cpu_isa.ladder() == cpu_isa.ARM_LEVELS else LOWEST_LEVEL)
    flags = flag_sets(level)
    if reason is not None or flags is None:
        return None, reason or f"no build for the {level!r} level"
    return load(sources, flags)


def load(sources: list[Path], flag_sets: list[list[str]]) -> tuple[ctypes.CDLL | None, str | None]:
    """(the library of `sources` built with the first flag set that compiles, None), or (None, why none could
    be built)."""
    names = " + ".join(f"hearth/kernels/model/csrc/{source.name}" for source in sources)
    if compiler() is None:
        return None, f"no C compiler to build {names}: {NO_COMPILER_HINT}"
    reason = "no flags given"
    for flags in flag_sets:
        try:
            return ctypes.CDLL(str(compile_source(sources, flags))), None
        except (OSError, RuntimeError) as exc:
            reason = f"building {names} failed: {exc}"
    return None, reason
