"""Serving benchmark: N concurrent streaming chat clients against OpenAI-compatible servers on 127.0.0.1.

Load. Level C (default 1 8 32) sends max(C * --requests-per-client, --min-requests) requests (defaults 2, 8:
8, 16, 64 requests); C clients pull indices from one shared counter and send back to back, so C are in flight
until the queue drains. Request i: PROMPTS[i % 8], seed --seed + i, max_completion_tokens --max-tokens,
stream_options.include_usage, temperature --temperature (default 0, greedy: `transformers serve` never
sets do_sample, so it is greedy at any temperature). The API has no ignore_eos: the prompts ask for long
answers and tok/req shows whether they reach the cap; --ignore-eos sends hearth's min_tokens extension equal
to max tokens instead (other servers may reject the field). Unmeasured warm-up per server: one 8-token request,
then a burst of max(--concurrency) of them (the first request also starts transformers' batching worker).

Metrics (vLLM's definitions, timed from sending the request):
  out tok/s  output tokens of the level / wall time of the level (first send to last end of stream)
  req/s      completed requests / wall time of the level
  TTFT       time to the first chunk with content; p50 and p90 over requests
  TPOT       per request (latency - TTFT) / (output tokens - 1), latency = time to the end of the stream;
             p50 over the requests with 2+ output tokens
Output tokens: the streamed usage where sent, else the content chunks; both are printed where they differ.

Servers (run one after the other): --url [--model] (any running server), --start-hearth (`python -m hearth.server`,
once per --quantization mode given, default the registry's), --compare-transformers (`transformers serve
--continuous-batching`), --compare-llama-server (llama.cpp's llama-server on the default model's Q4_1 GGUF,
2 threads, 32 slots: benchmarks/peers/llama_server.sh, built once). Both launched ones serve
~/.cache/hearth/models/SmolLM2-135M-Instruct offline in their own 'auto' dtype (hearth: bfloat16,
transformers: the checkpoint's float32) unless --dtype sets one for both.

GGUF files as downloaded: --gguf FILE [FILE ...] serves each file with hearth (`--model FILE`, no
--quantization: the file's own types choose the format) and, with --compare-llama-server, with llama-server
(LLAMA_SERVER_GGUF=FILE), and prints per file both servers' out tok/s and TPOT p50 and their ratio. Then a
cold start of each server on the file: process launch to the first answer of a 1-token chat request (polled
every 50 ms), hearth with HEARTH_CACHE a fresh temp folder holding copies of the real cache's kernels/ (the
compiled C kernels) only, so its gguf/ folder starts empty; disk
written is the bytes of every file that start created or changed under that HEARTH_CACHE (and % of the
file's size), plus the process's own /proc/PID/io write_bytes for both servers.

Prefix caching: --compare-prefix-caching starts hearth twice, with and without --no-prefix-caching, both
up at once, and runs every level on each in ABBA order (on, off, off, on, ...) for --rounds rounds, so
that the guest's drift falls on both alike; it prints each level's ratio of summed output tok/s (this
load shares no prefix long enough to hit: it measures what the cache costs when it does not help).
--hearth-args passes other flags to hearth.

Constraint cost: --compare-json-schema runs every level against hearth twice in the same server, unconstrained
and with response_format json_schema (STORY_SCHEMA: a title and a story, strings long enough to run to the
token cap), and prints the ratio of output tok/s.

Usage: python benchmarks/bench_serving.py [--start-hearth] [--compare-transformers] [--url URL [--model NAME]]
       [--concurrency 1 8 32] [--requests-per-client 2] [--min-requests 8] [--max-tokens 64] [--temperature 0]
       [--seed 1234] [--ignore-eos] [--dtype float32|bfloat16] [--quantization none bf16 int8 int4] [--compare-llama-server]
       [--transformers-args ARGS] [--hearth-args ARGS] [--compare-prefix-caching [--rounds 2]]
       [--plot benchmarks/out/serving.png]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cold_start import cold_start, fresh_cache, llama_server_command  # noqa: E402
from server_process import ROOT, free_port, launched, machine, served_model  # noqa: E402
from streaming_load import run_level  # noqa: E402

from hearth.kernels import cpu_isa  # noqa: E402

HEARTH_CACHE = Path(os.environ.get("HEARTH_CACHE", Path.home() / ".cache" / "hearth"))
MODEL_DIR = HEARTH_CACHE / "models" / "SmolLM2-135M-Instruct"  # hearth's default model; transformers' too
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
STORY_SCHEMA = {
    "type": "json_schema",
    "json_schema": {"name": "story", "strict": True, "schema": {
        "type": "object", "properties": {"title": {"type": "string", "maxLength": 60},
                                        "story": {"type": "string", "minLength": 2000}},
        "required": ["title", "story"], "additionalProperties": False}},
}
def default_dtype(server: str) -> str:
    """The dtype a launched server loads without --dtype: hearth's 'auto', transformers' checkpoint dtype."""
    with contextlib.suppress(Exception):
        if server == "hearth":
            from hearth.engine.config import resolve_dtype  # imports torch
            return f"auto = {str(resolve_dtype('auto', None)).removeprefix('torch.')}"
        return f"auto = {json.loads((MODEL_DIR / 'config.json').read_text())['dtype']} (config.json)"
    return "auto"


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def bench_server(name: str, url: str, model: str, dtype: str, args) -> dict[int, dict[str, float]]:
    """Warm up once, then run every concurrency level; print one row per level."""
    print(f"\n== {name}: {url}  model={model}  dtype={dtype}", flush=True)
    warm = argparse.Namespace(**{**vars(args), "max_tokens": min(8, args.max_tokens)})
    for c in (1, max(args.concurrency)):  # one request, then one burst at the top level (batched shapes)
        level = asyncio.run(run_level(url, model, c, c, warm))
        if error := next((r.error for r in level.results if r.error), None):
            raise RuntimeError(f"{name}: warm-up request failed: {error}")
        print(f"warm-up: {c} x {warm.max_tokens} tokens in {level.wall:.1f} s")
    print(f"{'conc':>4} {'reqs':>5} {'wall s':>7} {'out tok/s':>9} {'req/s':>6} {'TTFT p50':>9} "
          f"{'TTFT p90':>9} {'TPOT p50':>9} {'tok/req':>7}  (times in ms)")
    rows = {}
    for c in args.concurrency:
        n = max(c * args.requests_per_client, args.min_requests)
        level = asyncio.run(run_level(url, model, c, n, args))
        s = rows[c] = level.summary()
        print(f"{c:>4} {s['ok']:>5} {level.wall:>7.1f} {s['tok_s']:>9.1f} {s['req_s']:>6.2f} "
              f"{s['ttft_p50']:>9.1f} {s['ttft_p90']:>9.1f} {s['tpot_p50']:>9.1f} "
              f"{s['tokens'] / max(s['ok'], 1):>7.1f}", flush=True)
        if s["errors"]:
            print(f"     {s['errors']} failed, e.g. {next(r.error for r in level.results if r.error)}")
        if s["usage"] != s["usage_chunks"]:
            print(f"     output tokens of the requests with usage: {s['usage']} by usage, "
                  f"{s['usage_chunks']} content chunks")
        if s["no_usage"]:
            print(f"     {s['no_usage']} requests streamed no usage: output tokens = their content chunks")
    with contextlib.suppress(httpx.HTTPError, ValueError):
        health = httpx.get(url.removesuffix("/v1") + "/health", timeout=10, trust_env=False).json()
        if health.get("is_prefix_caching"):
            print(f"prefix cache: hit rate {health['prefix_cache_hit_rate']:.3f} "
                  f"({health['prefix_cache_hit_tokens']} of {health['prefix_cache_queried_tokens']} prompt tokens)")
    return rows


def plot(all_rows: dict[str, dict[int, dict[str, float]]], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, rows in all_rows.items():
        cs = sorted(rows)
        ax1.plot(cs, [rows[c]["tok_s"] for c in cs], marker="o", label=name)
        ax2.plot(cs, [rows[c]["tpot_p50"] for c in cs], marker="o", label=name)
    for ax, ylabel in ((ax1, "output tokens/s"), (ax2, "TPOT p50 (ms)")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted({c for rows in all_rows.values() for c in rows}))
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    print(f"\nplot: {path}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", help="base URL of a running OpenAI-compatible server on 127.0.0.1, "
                   "e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--model", help="model name for --url (default: the first of its /v1/models)")
    p.add_argument("--start-hearth", action="store_true", help="launch `python -m hearth.server` on a free port")
    p.add_argument("--compare-transformers", action="store_true",
                   help="also launch `transformers serve --continuous-batching` on the same model")
    p.add_argument("--transformers-args", default="",
                   help="extra flags for transformers serve, e.g. '--cb-num-blocks 512'")
    p.add_argument("--hearth-args", default="", help="extra flags for python -m hearth.server, e.g. '--no-prefix-caching'")
    p.add_argument("--compare-prefix-caching", action="store_true",
                   help="with --start-hearth: also run a hearth started with --no-prefix-caching, print the ratio")
    p.add_argument("--rounds", type=int, default=2,
                   help="with --compare-prefix-caching: ABBA rounds per level (default: 2)")
    p.add_argument("--dtype", help="dtype for both launched servers (default: each one's own 'auto')")
    p.add_argument("--quantization", nargs="+", choices=("none", "bf16", "int8", "int4"),
                   help="start hearth once per mode (default: once, in the registry entry's mode)")
    p.add_argument("--compare-llama-server", action="store_true",
                   help="also launch llama.cpp's llama-server (benchmarks/peers/llama_server.sh)")
    p.add_argument("--gguf", type=Path, nargs="+",
                   help="serve each .gguf file with hearth (no --quantization) and, with --compare-llama-server, "
                        "llama-server; print tok/s, TPOT, cold start and disk written per file")
    p.add_argument("--isa", choices=cpu_isa.LEVELS,
                   help=f"cap hearth at this CPU level ({cpu_isa.ENV}); a launched llama-server is built for the same "
                        "level (avx2: AVX2 + FMA + F16C, no AVX-512)")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--requests-per-client", type=int, default=2)
    p.add_argument("--min-requests", type=int, default=8, help="least requests per level (default: 8)")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--ignore-eos", action="store_true",
                   help="send min_tokens = --max-tokens (hearth's extension field), so every request runs to the cap; "
                        "for throughput on random-weight shape twins (benchmarks/shape_twin.py)")
    p.add_argument("--request-timeout", type=float, default=300.0, help="seconds per request")
    p.add_argument("--level-timeout", type=float, default=900.0, help="seconds per level")
    p.add_argument("--compare-json-schema", action="store_true",
                   help="with --start-hearth: run the levels again with response_format json_schema, print the cost")
    p.add_argument("--plot", type=Path, default=ROOT / "benchmarks" / "out" / "serving.png")
    args = p.parse_args(argv)
    if not (args.gguf or args.url or args.start_hearth or args.compare_transformers or args.compare_llama_server):
        p.error("name a server: --url, --start-hearth, --compare-transformers and/or --compare-llama-server")
    if args.url and urlparse(args.url).hostname not in LOCAL_HOSTS:
        p.error("--url must point at 127.0.0.1 (this benchmark only talks to the local machine)")
    return args


# A server's name in the tables: `none` runs bf16 on torch's kernels, `bf16` the same values on hearth's.
HEARTH_LABELS = {None: "hearth", "none": "hearth bf16", "bf16": "hearth bf16-kernels", "int8": "hearth int8",
                 "int4": "hearth int4"}


def hearth_flags(mode: str | None, args) -> list[str]:
    return [*(["--dtype", args.dtype] if args.dtype else []), *(["--quantization", mode] if mode else []),
            *shlex.split(args.hearth_args)]


def compare_prefix_caching(label: str, hearth_args: list[str], args) -> dict[str, dict[int, dict[str, float]]]:
    """hearth with and without --no-prefix-caching, both up at once; each level on both in ABBA order."""
    names = (f"{label} prefix caching on", f"{label} --no-prefix-caching")
    urls, totals = {}, {name: {c: [] for c in args.concurrency} for name in names}
    with contextlib.ExitStack() as stack:
        for name, extra in zip(names, ([], ["--no-prefix-caching"])):
            port = free_port()
            cmd = [sys.executable, "-m", "hearth.server", "--port", str(port), *hearth_args, *extra]
            stack.enter_context(launched(name.replace(" ", "-"), cmd, port))
            urls[name] = f"http://127.0.0.1:{port}/v1"
        for c in args.concurrency:
            level_args = argparse.Namespace(**{**vars(args), "concurrency": [c]})
            for index in range(args.rounds):
                for name in (names if index % 2 == 0 else names[::-1]):
                    rows = bench_server(f"{name}, round {index + 1}", urls[name], served_model(urls[name]),
                                        args.dtype or default_dtype("hearth"), level_args)
                    totals[name][c].append(rows[c])
    print(f"\n{label}: prefix caching on / off, mean output tok/s over {args.rounds} ABBA rounds (1.00 = free)")
    merged = {}
    for name in names:
        merged[name] = {c: {**runs[-1], "tok_s": statistics.mean(r["tok_s"] for r in runs)}
                        for c, runs in totals[name].items()}
    on, off = merged[names[0]], merged[names[1]]
    for c in args.concurrency:
        per_round = " ".join(f"{ratio(a['tok_s'], b['tok_s']):.3f}" for a, b in zip(totals[names[0]][c], totals[names[1]][c]))
        print(f"{c:>4} clients: {ratio(on[c]['tok_s'], off[c]['tok_s']):.3f}  ({on[c]['tok_s']:.1f} vs "
              f"{off[c]['tok_s']:.1f} tok/s; per round {per_round})")
    return merged


def bench_gguf(args) -> None:
    """Each file on hearth (its own format) and llama-server: throughput, then a cold start of each."""
    script = ROOT / "benchmarks" / "peers" / "llama_server.sh"
    if args.compare_llama_server:
        subprocess.run(["bash", str(script), "build"], check=True, stdout=subprocess.DEVNULL)
    c = args.concurrency[0]
    summary = []
    for path in args.gguf:
        path = path.resolve()
        size = path.stat().st_size
        def hearth_cmd(port: int, path: Path = path) -> list[str]:
            return [sys.executable, "-m", "hearth.server", "--model", str(path), "--port", str(port),
                    *shlex.split(args.hearth_args)]
        row: dict = {"file": path.name, "size": size}
        port = free_port()
        with launched(f"hearth-{path.stem}", hearth_cmd(port), port):
            url = f"http://127.0.0.1:{port}/v1"
            row["hearth"] = bench_server(f"hearth {path.name}", url, served_model(url), "the file's", args)[c]
        cache, port = fresh_cache(), free_port()
        try:
            row["hearth_cold"] = cold_start(f"hearth-{path.stem}", hearth_cmd(port), port,
                                            {"HEARTH_CACHE": str(cache)}, cache)
        finally:
            shutil.rmtree(cache, ignore_errors=True)
        if args.compare_llama_server:
            os.environ["LLAMA_SERVER_GGUF"] = str(path)
            port = free_port()
            with launched(f"llama-server-{path.stem}", ["bash", str(script), "serve", str(port)], port):
                row["llama"] = bench_server(f"llama-server {path.name} (2 threads, 32 slots)",
                                            f"http://127.0.0.1:{port}/v1", "smollm2-135m-instruct", "file's", args)[c]
            port = free_port()
            row["llama_cold"] = cold_start(f"llama-server-{path.stem}", llama_server_command(script, port, path),
                                           port, {}, None)
        cold = row["hearth_cold"]
        print(f"\nhearth cold start {path.name}: {cold['seconds']:.2f} s, wrote {cold['written']} B under HEARTH_CACHE "
              f"({sorted(cold['files'])}); /proc io write_bytes {cold['io']}", flush=True)
        summary.append(row)
    print(f"\nGGUF files at {c} client(s), {args.max_tokens} max tokens ({machine()}; level "
          f"{os.environ.get(cpu_isa.ENV) or cpu_isa.level()})")
    print(f"{'file':<34}{'MB':>7}{'hearth tok/s':>13}{'llama tok/s':>12}{'ratio':>7}{'hearth TPOT':>12}"
          f"{'llama TPOT':>11}{'ratio':>7}{'cold h s':>9}{'cold l s':>9}{'ratio':>7}{'h disk B':>10}{'% file':>8}"
          f"{'h io B':>10}{'l io B':>9}")
    for r in summary:
        h, hc = r["hearth"], r["hearth_cold"]
        ll, lc = r.get("llama"), r.get("llama_cold")
        nan = float("nan")
        print(f"{r['file']:<34}{r['size'] / 1e6:>7.1f}{h['tok_s']:>13.1f}{ll['tok_s'] if ll else nan:>12.1f}"
              f"{ratio(h['tok_s'], ll['tok_s']) if ll else nan:>7.2f}{h['tpot_p50']:>12.1f}"
              f"{ll['tpot_p50'] if ll else nan:>11.1f}{ratio(h['tpot_p50'], ll['tpot_p50']) if ll else nan:>7.2f}"
              f"{hc['seconds']:>9.2f}{lc['seconds'] if lc else nan:>9.2f}"
              f"{ratio(hc['seconds'], lc['seconds']) if lc else nan:>7.2f}{hc['written']:>10}"
              f"{100 * hc['written'] / r['size']:>7.2f}%{hc['io']:>10}{lc['io'] if lc else -1:>9}")
    print("(ratios: hearth / llama-server; TPOT p50 in ms; cold start: launch to the first answer of a 1-token "
          "request; h disk B: bytes of files created or changed under a fresh HEARTH_CACHE; io B: /proc/PID/io "
          "write_bytes of the server process)")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.isa:
        os.environ[cpu_isa.ENV] = args.isa  # inherited by every server this launches
    if args.gguf:
        (ROOT / "benchmarks" / "out").mkdir(parents=True, exist_ok=True)
        print(f"machine: {machine()}")
        bench_gguf(args)
        return 0
    (ROOT / "benchmarks" / "out").mkdir(parents=True, exist_ok=True)
    print(f"machine: {machine()}")
    print(f"load: {args.concurrency} clients, max({args.requests_per_client} x clients, {args.min_requests}) "
          f"requests per level, {args.max_tokens} max tokens, temperature {args.temperature}, "
          f"seeds from {args.seed}")
    all_rows: dict[str, dict[int, dict[str, float]]] = {}
    if args.url:
        url = args.url.rstrip("/")
        model = args.model or served_model(url)
        all_rows[urlparse(url).netloc] = bench_server("server", url, model, "?", args)
    dtype_args = ["--dtype", args.dtype] if args.dtype else []
    modes = (args.quantization or [None]) if args.start_hearth else []
    for mode in [] if args.compare_prefix_caching else modes:
        port = free_port()
        url = f"http://127.0.0.1:{port}/v1"
        name = HEARTH_LABELS[mode]
        hearth_args = hearth_flags(mode, args)
        with launched(name.replace(" ", "-"), [sys.executable, "-m", "hearth.server", "--port", str(port), *hearth_args],
                      port):
            all_rows[name] = bench_server(name, url, served_model(url), args.dtype or default_dtype("hearth"), args)
            if args.compare_json_schema:
                constrained = argparse.Namespace(**{**vars(args), "response_format": STORY_SCHEMA})
                all_rows[f"{name} json_schema"] = bench_server(
                    f"{name}, response_format json_schema", url, served_model(url),
                    args.dtype or default_dtype("hearth"), constrained)
                free, fixed = all_rows[name], all_rows[f"{name} json_schema"]
                print("\nconstraint cost: json_schema / unconstrained output tok/s (1.00 = free)")
                for c in args.concurrency:
                    print(f"{c:>4} clients: {ratio(fixed[c]['tok_s'], free[c]['tok_s']):.3f}  "
                          f"({fixed[c]['tok_s']:.1f} vs {free[c]['tok_s']:.1f} tok/s)")
    for mode in modes if args.compare_prefix_caching else []:
        label = HEARTH_LABELS[mode]
        all_rows |= compare_prefix_caching(label, hearth_flags(mode, args), args)
    if args.compare_transformers:
        port, exe = free_port(), Path(sys.executable).with_name("transformers")
        cmd = [str(exe), "serve", str(MODEL_DIR), "--continuous-batching", "--host", "127.0.0.1",
               "--port", str(port), *dtype_args, *shlex.split(args.transformers_args)]
        with launched("transformers", cmd, port):
            all_rows["transformers serve --cb"] = bench_server(
                "transformers serve --continuous-batching", f"http://127.0.0.1:{port}/v1", str(MODEL_DIR),
                args.dtype or default_dtype("transformers"), args)
    if args.compare_llama_server:
        port = free_port()
        script = ROOT / "benchmarks" / "peers" / "llama_server.sh"
        subprocess.run(["bash", str(script), "build"], check=True, stdout=subprocess.DEVNULL)
        with launched("llama-server", ["bash", str(script), "serve", str(port)], port):
            all_rows["llama-server"] = bench_server("llama-server (Q4_1 GGUF, 2 threads, 32 slots)",
                                                    f"http://127.0.0.1:{port}/v1", "smollm2-135m-instruct", "Q4_1", args)
    for peer in ("transformers serve --cb", "llama-server"):
        for name in [n for n in all_rows if n.startswith("hearth") and "json_schema" not in n]:
            if peer not in all_rows:
                continue
            h, t = all_rows[name], all_rows[peer]
            print(f"\n{name} / {peer}   (tok/s: higher is better for hearth; TPOT: lower is)")
            print(f"{'conc':>4} {'tok/s ratio':>11} {'TPOT p50 ratio':>14}")
            for c in args.concurrency:
                print(f"{c:>4} {ratio(h[c]['tok_s'], t[c]['tok_s']):>11.2f} "
                      f"{ratio(h[c]['tpot_p50'], t[c]['tpot_p50']):>14.2f}")
    plot(all_rows, args.plot, f"{MODEL_DIR.name}, {args.max_tokens} output tokens; {machine()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
