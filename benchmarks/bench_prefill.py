"""Cold prefill against llama-server: time to answer a ~1,000-token prompt never seen before, one request at
a time, on hearth and on llama.cpp's llama-server (benchmarks/peers/llama_server.sh, the same Q4_1 GGUF,
2 threads) on the same machine.

    python benchmarks/bench_prefill.py [--words 700] [--reps 5] [--quantization int4] [--isa avx2]

Each request is one user message of --words random ordinary words whose first word is new for each
request (so no prefix cache can help either server), max_tokens 1, temperature 0: its wall time is the
prompt's prefill plus one sampled token. Both servers see the same prompts in the same order, after one
warm-up request; the table prints the prompt length each server counted and the median and min seconds.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from server_process import ROOT, free_port, launched, machine  # noqa: E402

from hearth.kernels import cpu_isa  # noqa: E402

WORDS = ["river", "stone", "garden", "window", "paper", "silver", "market", "winter", "orange", "music", "planet",
         "forest", "letter", "candle", "bridge", "doctor", "engine", "island", "mirror", "pocket", "rabbit",
         "shadow", "ticket", "valley", "wonder", "yellow", "anchor", "basket", "cotton", "dragon", "feather",
         "harbor", "jacket", "kitten", "ladder", "meadow", "needle", "orchard", "pepper", "quarter", "saddle"]


def prompts(words: int, count: int) -> list[str]:
    rng = random.Random(1234)
    return [" ".join([f"request{i}", *rng.choices(WORDS, k=words - 1)]) for i in range(count)]


def timed_requests(url: str, model: str, texts: list[str]) -> tuple[list[float], list[int]]:
    seconds, lengths = [], []
    with httpx.Client(timeout=300, trust_env=False) as client:
        for text in texts:
            body = {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 1,
                    "temperature": 0}
            start = time.perf_counter()
            reply = client.post(f"{url}/chat/completions", json=body)
            seconds.append(time.perf_counter() - start)
            reply.raise_for_status()
            lengths.append(reply.json()["usage"]["prompt_tokens"])
    return seconds, lengths


def measure(name: str, cmd: list[str], model: str, texts: list[str]) -> dict[str, float]:
    port = free_port()
    with launched(name, [*cmd, str(port)] if cmd[-1] == "serve" else [*cmd, "--port", str(port)], port):
        url = f"http://127.0.0.1:{port}/v1"
        timed_requests(url, model, texts[:1])
        seconds, lengths = timed_requests(url, model, texts[1:])
    return {"tokens": statistics.median(lengths), "median": statistics.median(seconds), "min": min(seconds)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--words", type=int, default=700, help="words per prompt (default 700, about 1,000 tokens)")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--quantization", default="int4", choices=("none", "bf16", "int8", "int4"))
    p.add_argument("--isa", choices=cpu_isa.LEVELS, help=f"cap both servers' CPU level ({cpu_isa.ENV})")
    args = p.parse_args()
    if args.isa:
        os.environ[cpu_isa.ENV] = args.isa
    print(f"machine: {machine()}; hearth level {cpu_isa.level()}")
    texts = prompts(args.words, args.reps + 1)
    script = ROOT / "benchmarks" / "peers" / "llama_server.sh"
    subprocess.run(["bash", str(script), "build"], check=True, stdout=subprocess.DEVNULL)
    rows = {
        f"hearth {args.quantization}": measure("hearth-prefill", [sys.executable, "-m", "hearth.server",
                                                                  "--quantization", args.quantization],
                                               "smollm2-135m-instruct", texts),
        "llama-server Q4_1": measure("llama-server-prefill", ["bash", str(script), "serve"],
                                     "smollm2-135m-instruct", texts),
    }
    print(f"\ncold prefill, one request at a time, max_tokens 1, {args.reps} prompts")
    print(f"{'server':<22}{'prompt tokens':>14}{'median s':>10}{'min s':>8}")
    for name, row in rows.items():
        print(f"{name:<22}{row['tokens']:>14.0f}{row['median']:>10.3f}{row['min']:>8.3f}")
    hearth, peer = rows[f"hearth {args.quantization}"], rows["llama-server Q4_1"]
    print(f"\nhearth / llama-server, median time: {hearth['median'] / peer['median']:.2f} (1.00 or less: target met)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
