"""What prefix caching costs when nothing hits, measured in one process.

    python benchmarks/bench_prefix_cost.py [--quantization int4] [--clients 1 8 32] [--rounds 6]

Two engines share one loaded model, one with the prefix cache and one without, so they differ only in the
scheduler's and allocator's bookkeeping. Each round runs the same load on each, in ABBA order (on, off,
off, on, ...): --clients concurrent greedy requests of 64 tokens, each prompt a chat turn of its own
(random words, under one prefill chunk, so nothing can hit). Printed per client count: output tok/s of
each, their ratio per round and over all rounds, and the same for an A/A control (two cache-off
engines) that shows how finely this machine resolves a difference.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import hearth.engine  # noqa: E402,F401  (forces HF offline)
from hearth.engine.chat import render_chat  # noqa: E402
from hearth.engine.config import EngineConfig  # noqa: E402
from hearth.engine.llm_engine import LLMEngine  # noqa: E402
from hearth.engine.loading.loader import load_model  # noqa: E402
from hearth.engine.loading.registry import ModelRegistry  # noqa: E402
from hearth.engine.sampling.sampling_params import SamplingParams  # noqa: E402

WORDS = ["sea", "wind", "lamp", "stone", "river", "bread", "winter", "garden", "letter", "train", "market", "bridge",
         "candle", "forest"]
MAX_TOKENS = 64


def run_load(eng: LLMEngine, prompts: list[list[int]], tag: str) -> float:
    """Output tokens per second of `prompts` run at once to MAX_TOKENS each."""
    params = SamplingParams(temperature=0, max_tokens=MAX_TOKENS, ignore_eos=True)
    for i, prompt in enumerate(prompts):
        eng.add_request(f"{tag}-{i}", prompt, params)
    start = time.perf_counter()
    while eng.has_unfinished_requests():
        eng.step()
    return len(prompts) * MAX_TOKENS / (time.perf_counter() - start)


def compare(engines: dict[str, LLMEngine], clients: int, rounds: int, rng: random.Random) -> list[tuple[float, float]]:
    """(tok/s of the first engine, of the second) per round, ABBA, fresh prompts each round."""
    (name_a, a), (name_b, b) = engines.items()
    results = []
    for index in range(rounds):
        prompts = [render_chat(a.tokenizer, [{"role": "user", "content": " ".join(rng.choices(WORDS, k=30))}])
                   for _ in range(clients)]
        order = [(name_a, a), (name_b, b)] if index % 2 == 0 else [(name_b, b), (name_a, a)]
        tok_s = {name: run_load(eng, prompts, f"{name}-{clients}-{index}") for name, eng in order}
        results.append((tok_s[name_a], tok_s[name_b]))
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quantization", default="int4", choices=("none", "int8", "int4"))
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    entry = ModelRegistry.load(ROOT / "models.yaml").resolve(None)
    config = dict(model_path=str(entry.path), quantization=args.quantization, max_num_seqs=max(args.clients))
    loaded = load_model(entry, EngineConfig(**config))
    make = lambda caching: LLMEngine(EngineConfig(**config, enable_prefix_caching=caching), loaded=loaded)  # noqa: E731
    pairs = {"cache on / off": {"on": make(True), "off": make(False)},
             "A/A control, off / off": {"off-1": make(False), "off-2": make(False)}}
    rng = random.Random(0)
    for eng in (e for pair in pairs.values() for e in pair.values()):
        run_load(eng, [render_chat(eng.tokenizer, [{"role": "user", "content": "warm up"}])] * 2, "warm")
    print(f"{entry.id}, {args.quantization}, {MAX_TOKENS} greedy tokens per request, {args.rounds} ABBA rounds; "
          f"started {time.strftime('%Y-%m-%d %H:%M:%S')}")
    for clients in args.clients:
        for label, pair in pairs.items():
            results = compare(pair, clients, args.rounds, rng)
            a, b = (statistics.mean(r[i] for r in results) for i in (0, 1))
            per_round = " ".join(f"{x / y:.3f}" for x, y in results)
            print(f"{clients:>3} clients, {label:<24} {a / b:.3f}  ({a:.1f} vs {b:.1f} tok/s; rounds {per_round})",
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
