"""Decode-step time of the native forward by weight mode, with and without batch-invariant row tiling.

Measures what each mode and batch invariance cost: every linear called only with the row counts its
calibrated RowTiling allows (hearth.engine.model.row_tiling) against one call over all rows. Median ms per engine
step of N greedy decoding sequences (prefill excluded).

Usage: python benchmarks/bench_forward.py [--modes bf16 int8 int4 fp32] [--batches 1 8 32] [--steps 30]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from engine_timing import median_decode_step

from hearth.engine.config import EngineConfig
from hearth.engine.llm_engine import LLMEngine
from hearth.engine.loading.registry import ModelRegistry
from hearth.engine.model.row_tiling import RowTiling

ROOT = Path(__file__).resolve().parent.parent
MODES = {"bf16": ("bfloat16", "none"), "bf16-kernels": ("bfloat16", "bf16"), "fp32": ("float32", "none"), "int8": ("bfloat16", "int8"),
         "int4": ("bfloat16", "int4")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", nargs="+", default=["bf16", "int8", "int4"], choices=list(MODES))
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    entry = ModelRegistry.load(ROOT / "models.yaml").resolve(None)
    print(f"{'mode':>5} {'batch':>5} {'invariant ms':>13} {'one call ms':>12} {'cost':>6}")
    for mode in args.modes:
        dtype, quantization = MODES[mode]
        engine = LLMEngine(EngineConfig(model_path=str(entry.path), dtype=dtype, quantization=quantization,
                                        max_num_seqs=max(args.batches)), entry)
        linears = engine.loaded.model.linears()
        calibrated = [linear.tiling for linear in linears]
        for num_seqs in args.batches:
            for linear, tiling in zip(linears, calibrated):
                linear.tiling = tiling
            invariant = median_decode_step(engine, num_seqs, args.steps, tag="i") * 1e3
            for linear in linears:
                linear.tiling = RowTiling()
            single = median_decode_step(engine, num_seqs, args.steps, tag="s") * 1e3
            print(f"{mode:>5} {num_seqs:>5} {invariant:>13.1f} {single:>12.1f} {invariant / single - 1:>+6.1%}",
                  flush=True)
        del engine, linears


if __name__ == "__main__":
    main()
