"""Weight bytes each tensor-parallel rank holds, on the default model, at N = 1, 2, 3 ranks.

    python benchmarks/bench_tp_memory.py [--sizes 1 2 3] [--quantization none int4]

Figures are LlamaModel.resident_weight_bytes of every rank (distinct tensor storages, so a slice that kept
its whole tensor alive would count whole), gathered by the loader at start-up. The ranks are CPU processes
spawned by the engine; nothing runs but the load. "ideal" is one rank's bytes / N: what is above it is
replicated (norms; KV heads when N > num_kv_heads) or the larger share of an uneven split (9 heads over 2
ranks: 3 and 6).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from hearth.engine.config import EngineConfig
from hearth.engine.llm_engine import LLMEngine
from hearth.engine.loading.registry import ModelRegistry

ROOT = Path(__file__).resolve().parent.parent
MIB = 1 << 20


def rank_bytes(entry, quantization: str, size: int) -> tuple[int, ...]:
    engine = LLMEngine(EngineConfig(model_path=str(entry.path), dtype="bfloat16", quantization=quantization,
                                    max_model_len=512, kv_cache_memory_gib=0.05, max_num_seqs=4,
                                    tensor_parallel_size=size), entry)
    try:
        return engine.loaded.rank_weight_bytes
    finally:
        engine.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=str(ROOT / "models.yaml"))
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--quantization", nargs="+", default=["none", "int4"])
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    entry = ModelRegistry.load(args.models).resolve(None)
    print(f"{entry.id}: resident weight MiB per rank (bf16 activations)\n")
    print("| weights | N | per rank | total | ideal (one rank / N) | largest / ideal |")
    print("|---|---|---|---|---|---|")
    for quantization in args.quantization:
        whole = None
        for size in args.sizes:
            per_rank = rank_bytes(entry, quantization, size)
            whole = whole or (per_rank[0] if size == 1 else rank_bytes(entry, quantization, 1)[0])
            ideal = whole / size
            print(f"| {quantization} | {size} | {', '.join(f'{b / MIB:.1f}' for b in per_rank)} | "
                  f"{sum(per_rank) / MIB:.1f} | {ideal / MIB:.1f} | {max(per_rank) / ideal:.2f} |", flush=True)


if __name__ == "__main__":
    main()
