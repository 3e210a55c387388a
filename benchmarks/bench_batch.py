"""Offline batch against the server: the same N chat requests answered by `python -m hearth.server.batch` and by
`python -m hearth.server` with C concurrent (non-streaming) clients; wall time and output tok/s of each.

Request i: DEFAULT_PROMPTS[i % 20] of hearth.server.sweep, temperature 0.7, seed i, max_completion_tokens
--max-tokens. Times exclude loading the model: the batch's is the run time its summary prints, the server's
runs from the first request sent to the last answer (after one unmeasured warm-up request).

Usage: python benchmarks/bench_batch.py [--requests 2000] [--max-tokens 64] [--concurrency 32]
       [--out benchmarks/out/batch] [--engine-args "--max-num-seqs 64"]
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.server_process import free_port, launched, machine  # noqa: E402
from hearth.server.sweep.__main__ import DEFAULT_PROMPTS  # noqa: E402
from hearth.server.sweep.clients import HTTPClient  # noqa: E402

MODEL = "smollm2-135m-instruct"


def bodies(num: int, max_tokens: int) -> list[dict]:
    return [{"model": MODEL, "messages": [{"role": "user", "content": DEFAULT_PROMPTS[i % len(DEFAULT_PROMPTS)]}],
             "temperature": 0.7, "seed": i, "max_completion_tokens": max_tokens} for i in range(num)]


def run_batch(requests: list[dict], out: Path, engine_args: list[str]) -> tuple[float, int]:
    source, results = out / "requests.jsonl", out / "results.jsonl"
    source.write_text("".join(json.dumps({"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
                                          "body": body}) + "\n" for i, body in enumerate(requests)))
    results.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "hearth.server.batch", "-i", str(source), "-o", str(results), "--quiet", *engine_args]
    print(f"[batch] {' '.join(cmd)}", flush=True)
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    print(f"[batch] exit {done.returncode} after {time.perf_counter() - start:.1f} s with loading:\n{done.stderr}")
    match = re.search(r"(\d+) completion tokens in ([\d.]+) s", done.stderr)
    if done.returncode != 0 or match is None:
        raise SystemExit("the batch run failed")
    return float(match.group(2)), int(match.group(1))


def run_server(requests: list[dict], concurrency: int, engine_args: list[str]) -> tuple[float, int]:
    port = free_port()
    cmd = [sys.executable, "-m", "hearth.server", "--port", str(port), "--log-level", "warning", *engine_args]
    with launched("hearth-batch-bench", cmd, port):
        client = HTTPClient(f"http://127.0.0.1:{port}", MODEL, concurrency)
        client.run(requests[:1])
        answers, seconds = client.run(requests)
    return seconds, sum(a["usage"]["completion_tokens"] for a in answers)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--concurrency", type=int, default=32, help="concurrent clients of the server (default: 32)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "batch"))
    p.add_argument("--engine-args", default="", help="engine options given to both, e.g. '--max-num-seqs 64'")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    engine_args = shlex.split(args.engine_args)
    requests = bodies(args.requests, args.max_tokens)
    rows = {"hearth.server.batch": run_batch(requests, out, engine_args),
            f"server, {args.concurrency} clients": run_server(requests, args.concurrency, engine_args)}
    print(f"\n{machine()}\n{args.requests} requests, max_completion_tokens {args.max_tokens}\n")
    print("| run | wall s | completion tokens | tok/s | req/s |\n|---|---|---|---|---|")
    for name, (seconds, tokens) in rows.items():
        print(f"| {name} | {seconds:.1f} | {tokens} | {tokens / seconds:.1f} | {args.requests / seconds:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
