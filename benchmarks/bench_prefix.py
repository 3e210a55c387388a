"""Prefix caching benchmark: multi-turn chats and a shared system prompt, against hearth with the cache on and off.

Chats: --conversations (8) concurrent conversations of --turns (10) turns after one ~1,000-token system
prompt (SYSTEM, the same for all). Each turn appends a user message (its own per conversation and turn),
streams a greedy answer of up to --max-tokens (48) and appends that answer to the history, as chat
clients do. Time to first token (send -> first content chunk) is printed per turn, median over the
conversations, with the cache on and off; cold solo: each of conversation 0's prompts sent alone to the
cache-off server afterwards (1 output token), the cost of a cold prefill of that prompt with nothing
else running. Plot: --plot (benchmarks/out/prefix.png).

Shared system prompt load: --clients (32) clients send --requests-per-client (2) requests back to back,
each LOAD_SYSTEM (another ~1,000-token system prompt, not seen before) and its own short question, 64
output tokens; prints output tok/s and TTFT p50 with the cache on and off.

Chunk sizes: --chunk-sizes 128 256 512 measures, in this process and without a server, the cold prefill
of a ~1,000-token prompt (random ordinary tokens, 1 output token, cache off) at each prefill_chunk_size:
min and median of --reps runs, sizes interleaved.

Every server is `python -m hearth.server` on a free port (127.0.0.1), warmed up with a ~1,000-token prompt that
shares nothing with SYSTEM or LOAD_SYSTEM.

Usage: python benchmarks/bench_prefix.py [--conversations 8] [--turns 10] [--max-tokens 48] [--clients 32]
       [--requests-per-client 2] [--hearth-args ARGS] [--chunk-sizes 128 256 512 [--reps 5]] [--skip-servers]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from server_process import ROOT, free_port, launched, machine, served_model
from streaming_load import LevelResult, RequestResult

RULES = ["greet the customer by name", "confirm the order number before any change", "never promise a delivery date",
         "offer a refund only after checking the return window", "escalate safety complaints at once",
         "keep answers under five sentences", "quote prices with tax included", "log every call in the ticket"]
SYSTEM = "You are the support assistant of Harbour Hardware, a shop for boats and tools.\n" + "".join(
    f"Rule {i + 1}: {RULES[i % len(RULES)]}, as section {i // len(RULES) + 1} of the handbook says, "
    f"for every order of type {chr(65 + i % 26)}.\n" for i in range(33))
LOAD_SYSTEM = SYSTEM.replace("Harbour Hardware", "Meadow Garden Supplies").replace("boats", "gardens")
WARMUP = SYSTEM.replace("Harbour Hardware", "Warm-up Ltd").replace("Rule", "Note")
MODEL = "smollm2-135m-instruct"  # the default model's id in models.yaml
TOPICS = ["a broken drill", "a late delivery", "a paint colour", "a refund", "anchor chain sizes", "a missing screw",
          "opening hours", "a discount code", "a damaged ladder", "a gift card"]


@dataclass
class Turn:
    ttft: float
    latency: float
    text: str
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    chunks: int


async def chat(client: httpx.AsyncClient, url: str, messages: list[dict], max_tokens: int) -> Turn:
    """One streamed greedy completion: TTFT at the first content chunk, the text, the usage."""
    body = {"model": MODEL, "messages": messages, "stream": True, "stream_options": {"include_usage": True},
            "temperature": 0, "max_completion_tokens": max_tokens}
    start, ttft, text, usage, chunks = time.perf_counter(), float("nan"), "", {}, 0
    async with client.stream("POST", f"{url}/chat/completions", json=body) as resp:
        resp.raise_for_status()
        async for line in resp.aiter_lines():
            if not line.startswith("data:") or (data := line[5:].strip()) == "[DONE]":
                continue
            chunk = json.loads(data)
            if "error" in chunk:
                raise RuntimeError(f"server error: {chunk['error']}")
            content = "".join((c.get("delta") or {}).get("content") or "" for c in chunk.get("choices") or [])
            if content:
                ttft = time.perf_counter() - start if not chunks else ttft
                chunks += 1
            text += content
            usage = chunk.get("usage") or usage
    details = usage.get("prompt_tokens_details") or {}
    return Turn(ttft, time.perf_counter() - start, text, usage.get("prompt_tokens", 0),
                details.get("cached_tokens", 0), usage.get("completion_tokens", chunks), chunks)


def user_message(conversation: int, turn: int) -> dict:
    return {"role": "user", "content": f"Customer {conversation + 1}, message {turn + 1}: I have a question about "
                                       f"{TOPICS[(conversation + turn) % len(TOPICS)]}. What should I do?"}


async def run_chats(url: str, args) -> list[list[Turn]]:
    """turns[conversation][turn]; the conversations run concurrently, each turn after the previous one."""
    async def conversation(index: int) -> list[Turn]:
        messages, turns = [{"role": "system", "content": SYSTEM}], []
        for turn in range(args.turns):
            messages.append(user_message(index, turn))
            result = await chat(client, url, messages, args.max_tokens)
            messages.append({"role": "assistant", "content": result.text})
            turns.append(result)
        return turns

    async with httpx.AsyncClient(timeout=600, trust_env=False) as client:
        return list(await asyncio.gather(*(conversation(i) for i in range(args.conversations))))


async def cold_solo(url: str, chats: list[list[Turn]], args) -> list[float]:
    """TTFT of conversation 0's prompt of each turn, sent alone (the history as that run saw it)."""
    ttfts, messages = [], [{"role": "system", "content": SYSTEM}]
    async with httpx.AsyncClient(timeout=600, trust_env=False) as client:
        for turn, result in enumerate(chats[0]):
            messages.append(user_message(0, turn))
            ttfts.append((await chat(client, url, messages, 1)).ttft)
            messages.append({"role": "assistant", "content": result.text})
    return ttfts


async def shared_load(url: str, args) -> LevelResult:
    """--clients clients, requests back to back: LOAD_SYSTEM + question i, 64 output tokens each."""
    indices = iter(range(args.clients * args.requests_per_client))
    results: list[RequestResult] = []
    limits = httpx.Limits(max_connections=args.clients + 1, max_keepalive_connections=args.clients + 1)
    async with httpx.AsyncClient(timeout=600, limits=limits, trust_env=False) as client:
        async def worker() -> None:
            for i in indices:
                turn = await chat(client, url, [{"role": "system", "content": LOAD_SYSTEM}, user_message(i, i)], 64)
                results.append(RequestResult(turn.ttft, turn.latency, turn.completion_tokens, turn.chunks))

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(args.clients)))
        return LevelResult(args.clients, time.perf_counter() - start, results)


def bench_server(name: str, flags: list[str], args) -> dict:
    """Start hearth with `flags`, warm it up, run the chats (and cold solo prompts when the cache is off),
    then the shared-system-prompt load; returns the measurements and /health."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    with launched(f"hearth-{name}", [sys.executable, "-m", "hearth.server", "--port", str(port), *flags], port):
        async def warm_up() -> None:
            async with httpx.AsyncClient(timeout=600, trust_env=False) as client:
                for text in (WARMUP, WARMUP.replace("Note", "Item")):
                    await chat(client, url, [{"role": "system", "content": text}, user_message(0, 0)], 4)

        if served_model(url) != MODEL:
            raise RuntimeError(f"hearth serves {served_model(url)!r}, not the default model {MODEL!r}")
        asyncio.run(warm_up())
        result: dict = {"chats": asyncio.run(run_chats(url, args))}
        if "--no-prefix-caching" in flags:
            result["cold"] = asyncio.run(cold_solo(url, result["chats"], args))
        result["load"] = asyncio.run(shared_load(url, args)).summary()
        result["health"] = httpx.get(f"http://127.0.0.1:{port}/health", timeout=10, trust_env=False).json()
    return result


def turn_table(on: dict, off: dict) -> list[dict]:
    rows = []
    for turn in range(len(on["chats"][0])):
        ons, offs = ([c[turn] for c in r["chats"]] for r in (on, off))
        row = {"turn": turn + 1, "prompt": statistics.mean(t.prompt_tokens for t in ons),
               "cached": statistics.mean(t.cached_tokens for t in ons),
               "on": statistics.median(t.ttft for t in ons) * 1e3, "off": statistics.median(t.ttft for t in offs) * 1e3,
               "on_max": max(t.ttft for t in ons) * 1e3, "cold": off["cold"][turn] * 1e3}
        rows.append(row)
    return rows


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    turns = [r["turn"] for r in rows]
    ax.plot(turns, [r["off"] for r in rows], marker="o", label="cache off (median of conversations)")
    ax.plot(turns, [r["on"] for r in rows], marker="o", label="cache on (median of conversations)")
    ax.plot(turns, [r["cold"] for r in rows], marker="x", linestyle="--", label="cold prefill, alone")
    ax.set_yscale("log")
    ax.set_xticks(turns)
    ax.set_xlabel("turn")
    ax.set_ylabel("time to first token (ms)")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    print(f"plot: {path}")


def chunk_sizes(args) -> None:
    """Cold prefill of a ~1,000-token prompt at each prefill_chunk_size, in this process (see the docstring)."""
    import random

    import hearth.engine  # noqa: F401  (forces HF offline)
    from hearth.engine.config import EngineConfig
    from hearth.engine.llm_engine import LLMEngine
    from hearth.engine.loading.loader import load_model
    from hearth.engine.loading.registry import ModelRegistry
    from hearth.engine.sampling.sampling_params import SamplingParams

    entry = ModelRegistry.load(ROOT / "models.yaml").resolve(None)
    loaded = load_model(entry, EngineConfig(model_path=str(entry.path)))
    engines = {c: LLMEngine(EngineConfig(model_path=str(entry.path), prefill_chunk_size=c, enable_prefix_caching=False,
                                         kv_cache_memory_gib=0.25), loaded=loaded) for c in args.chunk_sizes}
    rng, times = random.Random(0), {c: [] for c in args.chunk_sizes}
    for rep in range(args.reps + 1):  # the first round warms up every shape
        for size, eng in engines.items():
            eng.add_request(f"r{rep}", [rng.randrange(100, 40000) for _ in range(1000)],
                            SamplingParams(temperature=0, max_tokens=1))
            start = time.perf_counter()
            while eng.has_unfinished_requests():
                eng.step()
            if rep:
                times[size].append(time.perf_counter() - start)
    print(f"\ncold prefill, 1000 tokens, cache off ({args.reps} runs; max_num_batched_tokens "
          f"{EngineConfig.__dataclass_fields__['max_num_batched_tokens'].default})")
    for size, ts in times.items():
        print(f"  chunk {size:>4}: min {min(ts) * 1e3:7.0f} ms  median {statistics.median(ts) * 1e3:7.0f} ms")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--conversations", type=int, default=8)
    p.add_argument("--turns", type=int, default=10)
    p.add_argument("--max-tokens", type=int, default=48, help="answer length cap per turn (default: 48)")
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--requests-per-client", type=int, default=2)
    p.add_argument("--hearth-args", default="", help="extra flags for both servers, e.g. '--dtype float32'")
    p.add_argument("--chunk-sizes", type=int, nargs="*", default=[])
    p.add_argument("--reps", type=int, default=5, help="runs per chunk size (default: 5)")
    p.add_argument("--skip-servers", action="store_true", help="only the --chunk-sizes measurement")
    p.add_argument("--plot", type=Path, default=ROOT / "benchmarks" / "out" / "prefix.png")
    args = p.parse_args(argv)
    (ROOT / "benchmarks" / "out").mkdir(parents=True, exist_ok=True)
    print(f"machine: {machine()}; started {time.strftime('%Y-%m-%d %H:%M:%S')}")
    if args.chunk_sizes:
        chunk_sizes(args)
    if args.skip_servers:
        return 0
    flags = shlex.split(args.hearth_args)
    on = bench_server("prefix-caching", flags, args)
    off = bench_server("no-prefix-caching", [*flags, "--no-prefix-caching"], args)
    rows = turn_table(on, off)
    print(f"\nchats: {args.conversations} conversations x {args.turns} turns, answers <= {args.max_tokens} tokens; "
          "TTFT in ms, median over conversations")
    print(f"{'turn':>4} {'prompt':>7} {'cached':>7} {'on':>8} {'off':>8} {'on/off':>7} {'cold solo':>9} {'on/cold':>7}")
    for r in rows:
        print(f"{r['turn']:>4} {r['prompt']:>7.0f} {r['cached']:>7.0f} {r['on']:>8.0f} {r['off']:>8.0f} "
              f"{r['on'] / r['off']:>7.3f} {r['cold']:>9.0f} {r['on'] / r['cold']:>7.3f}")
    if args.clients:  # --clients 0: the chats alone
        print(f"\nshared system prompt: {args.clients} clients x {args.requests_per_client} requests, 64 output tokens")
        for name, result in (("on", on), ("off", off)):
            s = result["load"]
            print(f"  cache {name:>3}: {s['tok_s']:7.1f} out tok/s  TTFT p50 {s['ttft_p50']:7.0f} ms  "
                  f"TPOT p50 {s['tpot_p50']:5.1f} ms  ({s['ok']} ok, {s['errors']} failed)")
        print(f"  on / off: {on['load']['tok_s'] / off['load']['tok_s']:.2f}x tok/s")
    health = on["health"]
    print(f"\ncache-on server /health: hit rate {health['prefix_cache_hit_rate']:.3f} "
          f"({health['prefix_cache_hit_tokens']} of {health['prefix_cache_queried_tokens']} prompt tokens), "
          f"{health['prefix_cache_blocks']} cached blocks")
    plot(rows, args.plot, f"SmolLM2-135M-Instruct, {args.conversations} conversations x {args.turns} turns; "
                          f"{machine().split(';')[0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
