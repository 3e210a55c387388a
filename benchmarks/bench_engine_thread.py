"""Engine step time when stepped from the main thread versus from a second thread.

Why `python -m hearth.server` runs the engine loop in its main thread and HTTP in another: on this project's CPU
the same decode steps took 40-60% longer from a thread other than the main one (oneDNN/OpenMP per-thread
state). Prints the median decode-step time of each, for batch sizes 1 and 8.

Usage: python benchmarks/bench_engine_thread.py [--steps 40]
"""

from __future__ import annotations

import argparse
import threading
from pathlib import Path

from engine_timing import median_decode_step

from hearth.engine.config import EngineConfig
from hearth.engine.llm_engine import LLMEngine
from hearth.engine.loading.registry import ModelRegistry

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    entry = ModelRegistry.load(ROOT / "models.yaml").resolve(None)
    engine = LLMEngine(EngineConfig(model_path=str(entry.path)), entry)
    print(f"{'batch':>5} {'main thread ms':>15} {'second thread ms':>17} {'ratio':>6}")
    for num_seqs in (1, 8):
        results = {}

        def in_thread(num_seqs=num_seqs, results=results) -> None:
            results["thread"] = median_decode_step(engine, num_seqs, args.steps, "thread")

        results["main"] = median_decode_step(engine, num_seqs, args.steps, "main")
        worker = threading.Thread(target=in_thread)
        worker.start()
        worker.join()
        print(f"{num_seqs:>5} {results['main'] * 1e3:>15.1f} {results['thread'] * 1e3:>17.1f} "
              f"{results['thread'] / results['main']:>6.2f}")


if __name__ == "__main__":
    main()
