"""Row counts a GEMM kernel may be called with so that each row's result is the same in any batch.

Vendor GEMMs choose their blocking, and so their float32 accumulation order, by the number of rows. Measured
(benchmarks/bench_linear.py, tests/engine/model/test_row_tiling.py):
- Intel Sapphire Rapids (AMX), bf16 oneDNN: 1-8 rows agree with each other and with 33+ rows for some
  shapes, 9-32 rows compute differently, and the classes differ by shape (3072x576: 1-32 agree).
- AMD EPYC, bf16 oneDNN: one row took a GEMV path unlike 2+ rows. float32 MKL: 1-7 and 9-11 rows differed
  from 8 or more.
- aten's int8 and int4 weight-only kernels: every row count agrees (each row is its own dot products).

So rather than hard-coding a padding per machine, each kernel configuration is calibrated once at load:
call it with 1..64 rows of random data and find an interval [min_rows, max_rows] of row counts whose
results agree row for row (and do not depend on a row's position). Batches are then cut into calls of at
most max_rows rows, and a call with fewer than min_rows rows is zero-padded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor

logger = logging.getLogger(__name__)

MAX_TILE_ROWS = 64
_CANDIDATE_MAX_ROWS = (64, 48, 32, 16, 8, 4, 2, 1)


@dataclass(frozen=True)
class RowTiling:
    min_rows: int = 1
    # None: any number of rows in one call (not calibrated).
    max_rows: int | None = None

    def __post_init__(self) -> None:
        if self.min_rows < 1:
            raise ValueError(f"min_rows must be >= 1, got {self.min_rows}")
        if self.max_rows is not None and self.max_rows < self.min_rows:
            raise ValueError(f"max_rows must be >= min_rows ({self.min_rows}), got {self.max_rows}")

    def tiles(self, num_rows: int) -> list[tuple[int, int, int]]:
        """(start, stop, rows the kernel is called with) for each call covering rows [0, num_rows)."""
        step = self.max_rows or max(num_rows, 1)
        return [(start, min(start + step, num_rows), max(self.min_rows, min(step, num_rows - start)))
                for start in range(0, max(num_rows, 1), step)]


def calibrate_row_tiling(kernel: Callable[[Tensor], Tensor], in_features: int, dtype: torch.dtype,
                         device: torch.device) -> RowTiling:
    """An interval of row counts on which `kernel` gives every row the same result.

    Among the intervals found (one per candidate max_rows), the one with the least padding of a lone row
    plus calls per 64 rows: min_rows + 64 / max_rows."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(MAX_TILE_ROWS, in_features, generator=generator).to(device=device, dtype=dtype)
    outputs = {m: kernel(x[:m]) for m in range(1, MAX_TILE_ROWS + 1)}
    candidates = []
    for max_rows in _CANDIDATE_MAX_ROWS:
        reference = outputs[max_rows]
        min_rows = max_rows
        # Both the first and the last rows of the reference: a vendor GEMV can agree with the GEMM on a call's
        # first rows and not on later ones (measured: oneDNN bf16 on AVX-512 without AMX, rows 4+ of 576 x 1536).
        while min_rows > 1 and torch.equal(outputs[min_rows - 1], reference[:min_rows - 1]) and torch.equal(
                kernel(x[max_rows - min_rows + 1:max_rows]), reference[max_rows - min_rows + 1:]):
            min_rows -= 1
        candidates.append((min_rows + MAX_TILE_ROWS / max_rows, RowTiling(min_rows=min_rows, max_rows=max_rows)))
    for _, tiling in sorted(candidates, key=lambda c: c[0]):
        rows = tiling.max_rows
        perm = torch.randperm(rows, generator=generator).to(device)
        if torch.equal(kernel(x[:rows][perm]), outputs[rows][perm]):
            return tiling
    return RowTiling(min_rows=1, max_rows=1)


def machine_key() -> str:
    """What a kernel's row behaviour depends on: the processor (model and instruction sets), torch, and the
    thread count (oneDNN and MKL block by threads)."""
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            lines = [ln for ln in f if ln.startswith(("model name", "flags"))][:2]
        cpu = "".join(lines)
    except OSError:
        pass
    return hashlib.sha256(f"{cpu}|{torch.__version__}|{torch.get_num_threads()}".encode()).hexdigest()[:16]


class RowTilingStore:
    """Calibrations kept on disk per machine and torch build, so a restart does not measure them again.

    Several processes may share the file (tensor-parallel ranks calibrate their own shards' shapes at the
    same time): each write merges what the file holds then, so one rank's entries do not erase another's."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.entries: dict[str, dict] = self._read()

    def _read(self) -> dict[str, dict]:
        if self.path is None or not self.path.is_file():
            return {}
        try:
            entries = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return entries if isinstance(entries, dict) else {}

    @staticmethod
    def _key(kernel_key: tuple, device: torch.device) -> str:
        # cuBLAS's choice of kernel follows the GPU model and the CUDA and torch builds.
        prefix = (machine_key() if device.type == "cpu"
                  else f"{torch.cuda.get_device_name(device)}|{torch.__version__}|{torch.version.cuda}")
        return f"{prefix}|{kernel_key}"

    def get(self, kernel_key: tuple, device: torch.device) -> RowTiling | None:
        found = self.entries.get(self._key(kernel_key, device))
        return RowTiling(**found) if found else None

    def put(self, kernel_key: tuple, device: torch.device, tiling: RowTiling) -> None:
        self.entries[self._key(kernel_key, device)] = asdict(tiling)
        if self.path is None:
            return
        self.entries = {**self._read(), **self.entries}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(self.entries, indent=1))
            tmp.replace(self.path)
        except OSError as exc:
            logger.warning("could not save row tilings to %s: %s", self.path, exc)
