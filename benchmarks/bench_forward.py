"""Decode-step time of the native forward by dtype, with and without batch-invariant row padding.

Measures what the CPU dtype choice and batch invariance cost: bfloat16 against float32, each with its
row padding (bf16: a single row padded to 2; fp32: rows padded to a multiple of 8, see
engine.model.models.llama.batch_invariant_padding) and without. Median ms per engine step of N greedy decoding
sequences (prefill excluded).

Usage: python benchmarks/bench_forward.py [--batches 1 3 8 32] [--steps 30]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from engine_timing import median_decode_step

from engine.config import EngineConfig
from engine.llm_engine import LLMEngine
from engine.loading.registry import ModelRegistry
from engine.model.models.llama import RowPadding

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 3, 8, 32])
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    entry = ModelRegistry.load(ROOT / "models.yaml").resolve(None)
    print(f"{'dtype':>9} {'batch':>5} {'invariant ms':>13} {'unpadded ms':>12} {'cost':>6}")
    for dtype in ("bfloat16", "float32"):
        engine = LLMEngine(EngineConfig(model_path=str(entry.path), dtype=dtype, max_num_seqs=max(args.batches)), entry)
        model = engine.loaded.model
        padding = model.row_padding
        for num_seqs in args.batches:
            model.row_padding = padding
            invariant = median_decode_step(engine, num_seqs, args.steps) * 1e3
            model.row_padding = RowPadding()
            unpadded = median_decode_step(engine, num_seqs, args.steps) * 1e3
            print(f"{dtype:>9} {num_seqs:>5} {invariant:>13.1f} {unpadded:>12.1f} {invariant / unpadded - 1:>+6.1%}",
                  flush=True)
        del engine, model


if __name__ == "__main__":
    main()
