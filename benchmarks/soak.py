"""Soak test: N clients send a mix of chat requests for T minutes against one server on 127.0.0.1.

Each client loops until the time is up, drawing each request from MIX (seeded): plain and streamed, n=2
with seeds, logprobs, stop strings, json_object, tools (auto and required), sampling variations, a
deliberately invalid request (must be a 400) and a client that gives up after 0.3 s (the server must
abort it). Any other outcome is an error: an unexpected status, a stream without [DONE], a transport
failure. Every --rss-interval seconds the server's resident memory is sampled (/proc/PID/status).

Prints: requests and errors by kind (with the first few errors), latency percentiles (end to end, and
TTFT for streams), the RSS series, and RSS growth from the first sample after --warmup seconds to the
last.

Usage: python benchmarks/soak.py --start-hearth [--clients 64] [--minutes 10] [--max-tokens 48]
       python benchmarks/soak.py --url http://127.0.0.1:8000 --pid PID [--api-key KEY] ...
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import random
import sys
import time
from pathlib import Path

import httpx
import numpy as np
from server_process import free_port, launched
from streaming_load import PROMPTS

ROOT = Path(__file__).resolve().parent.parent
MODEL = "smollm2-135m-instruct"
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 40}},
                   "required": ["city"], "additionalProperties": False}}}]
# kind -> weight; see body() for what each sends.
MIX = {"plain": 20, "stream": 20, "n2_seeded": 8, "logprobs": 8, "stop": 8, "sampling": 10, "json_object": 6,
       "tools_auto": 5, "tools_required": 5, "invalid": 5, "abandoned": 5}


def body(kind: str, rng: random.Random, max_tokens: int) -> dict:
    prompt = rng.choice(PROMPTS)
    request = {"model": MODEL, "messages": [{"role": "user", "content": prompt}],
               "max_completion_tokens": rng.randint(max(1, max_tokens // 4), max_tokens)}
    if kind == "stream":
        request.update(stream=True, stream_options={"include_usage": True})
    elif kind == "n2_seeded":
        request.update(n=2, seed=rng.randrange(2**63), temperature=0.8)
    elif kind == "logprobs":
        request.update(logprobs=True, top_logprobs=rng.randint(0, 5), stream=rng.random() < 0.5)
    elif kind == "stop":
        request.update(stop=rng.sample([".", ",", "\n", " the", "and"], k=2), stream=rng.random() < 0.5)
    elif kind == "sampling":
        request.update(temperature=rng.uniform(0, 1.5), top_p=rng.uniform(0.5, 1), top_k=rng.choice([0, 20, 50]),
                       frequency_penalty=rng.uniform(-0.5, 1), presence_penalty=rng.uniform(-0.5, 1),
                       logit_bias={str(rng.randrange(1000, 40000)): rng.uniform(-5, 5)})
    elif kind == "json_object":
        request["messages"][0]["content"] = "Answer in JSON with keys name and age: who wrote Hamlet?"
        request.update(response_format={"type": "json_object"}, stream=rng.random() < 0.5)
    elif kind in ("tools_auto", "tools_required"):
        request["messages"][0]["content"] = "What is the weather in Paris?"
        request.update(tools=TOOLS, tool_choice="auto" if kind == "tools_auto" else "required",
                       stream=rng.random() < 0.5)
    elif kind == "invalid":
        request.update(rng.choice([{"temperature": 5}, {"n": 0}, {"seed": 2**70}, {"stop": [""]}, {"colour": 1}]))
    elif kind == "abandoned":
        request["max_completion_tokens"] = 4 * max_tokens
    return request


async def send(client: httpx.AsyncClient, url: str, kind: str, request: dict) -> tuple[float, float | None, str | None]:
    """(latency, ttft or None, error or None) of one request."""
    start = time.perf_counter()
    ttft = None
    if kind == "abandoned":
        with contextlib.suppress(httpx.TimeoutException):
            await client.post(url + "/v1/chat/completions", json=request, timeout=0.3)
        return time.perf_counter() - start, None, None
    try:
        if not request.get("stream"):
            response = await client.post(url + "/v1/chat/completions", json=request)
            expected = 400 if kind == "invalid" else 200
            if response.status_code != expected:
                return time.perf_counter() - start, None, f"HTTP {response.status_code}: {response.text[:200]}"
            response.json()
            return time.perf_counter() - start, None, None
        async with client.stream("POST", url + "/v1/chat/completions", json=request) as response:
            if response.status_code != 200:
                return time.perf_counter() - start, None, f"HTTP {response.status_code}: {(await response.aread())[:200]!r}"
            last = None
            async for line in response.aiter_lines():
                if not line.startswith("data: "):
                    continue
                last = line[6:]
                if last != "[DONE]":
                    event = json.loads(last)
                    if "error" in event:
                        return time.perf_counter() - start, ttft, f"error event: {event['error']}"
                    if ttft is None and any((c.get("delta") or {}).get("content") for c in event.get("choices") or []):
                        ttft = time.perf_counter() - start
            if last != "[DONE]":
                return time.perf_counter() - start, ttft, "stream ended without [DONE]"
        return time.perf_counter() - start, ttft, None
    except (httpx.HTTPError, ValueError) as exc:
        return time.perf_counter() - start, ttft, f"{type(exc).__name__}: {exc}"


def rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


async def soak(url: str, pid: int | None, args) -> int:
    deadline = time.monotonic() + args.minutes * 60
    results: dict[str, list] = collections.defaultdict(list)
    rss: list[tuple[float, float]] = []
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    limits = httpx.Limits(max_connections=args.clients + 4, max_keepalive_connections=args.clients + 4)
    started = time.monotonic()

    async with httpx.AsyncClient(timeout=args.request_timeout, limits=limits, headers=headers, trust_env=False) as client:
        async def worker(index: int) -> None:
            rng = random.Random(args.seed * 1000 + index)
            kinds, weights = zip(*MIX.items())
            while time.monotonic() < deadline:
                kind = rng.choices(kinds, weights)[0]
                results[kind].append(await send(client, url, kind, body(kind, rng, args.max_tokens)))

        finished = asyncio.Event()

        async def sample_rss() -> None:
            # Until the last request ends: requests in flight at the deadline run to their end.
            while not finished.is_set() and pid is not None:
                if (value := rss_mib(pid)) is not None:
                    rss.append((time.monotonic() - started, value))
                    print(f"  t={rss[-1][0]:6.0f} s  RSS {value:8.1f} MiB  requests {sum(map(len, results.values()))}",
                          flush=True)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(finished.wait(), args.rss_interval)

        async def workers() -> None:
            await asyncio.gather(*(worker(i) for i in range(args.clients)))
            finished.set()

        await asyncio.gather(sample_rss(), workers())
        args.elapsed = time.monotonic() - started
        if pid is not None and (value := rss_mib(pid)) is not None:
            rss.append((time.monotonic() - started, value))
    return report(results, rss, args)


def report(results: dict[str, list], rss: list[tuple[float, float]], args) -> int:
    every = [r for rs in results.values() for r in rs]
    errors = [(kind, r[2]) for kind, rs in results.items() for r in rs if r[2] is not None]
    print(f"\n{len(every)} requests from {args.clients} clients in {args.elapsed / 60:.1f} min ({args.minutes:g} min of "
          f"sending, then the requests in flight ran to their end); {len(errors)} errors")
    pct = lambda xs, q: float(np.percentile(xs, q)) * 1e3 if xs else float("nan")
    print(f"{'kind':16} {'requests':>8} {'errors':>6} {'p50 ms':>9} {'p90 ms':>9} {'p99 ms':>9} {'TTFT p50':>9}")
    for kind in MIX:
        rs = results.get(kind, [])
        latencies = [r[0] for r in rs if r[2] is None]
        ttfts = [r[1] for r in rs if r[1] is not None]
        print(f"{kind:16} {len(rs):8} {sum(r[2] is not None for r in rs):6} {pct(latencies, 50):9.0f} "
              f"{pct(latencies, 90):9.0f} {pct(latencies, 99):9.0f} {pct(ttfts, 50):9.0f}")
    latencies = [r[0] for r in every if r[2] is None]
    print(f"{'all':16} {len(every):8} {len(errors):6} {pct(latencies, 50):9.0f} {pct(latencies, 90):9.0f} "
          f"{pct(latencies, 99):9.0f}")
    for kind, error in errors[:10]:
        print(f"  error ({kind}): {error}")
    if rss:
        after_warmup = [v for t, v in rss if t >= args.warmup] or [rss[-1][1]]
        first, last = after_warmup[0], rss[-1][1]
        print(f"RSS: {rss[0][1]:.1f} MiB at start, {first:.1f} MiB after {args.warmup:g} s warm-up, {last:.1f} MiB "
              f"at the end, max {max(v for _, v in rss):.1f} MiB; growth after warm-up {100 * (last - first) / first:+.1f}%")
    return 1 if errors else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running server (with --pid for its RSS)")
    parser.add_argument("--pid", type=int, help="the running server's process id")
    parser.add_argument("--start-hearth", action="store_true", help="start `python -m hearth.server` for the run")
    parser.add_argument("--server-args", default="", help="extra arguments for the started server")
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--rss-interval", type=float, default=15.0)
    parser.add_argument("--warmup", type=float, default=60.0, help="seconds before the RSS baseline is taken")
    parser.add_argument("--request-timeout", type=float, default=600.0)
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args()
    if args.start_hearth:
        port = free_port()
        cmd = [sys.executable, "-m", "hearth.server", "--port", str(port), "--log-level", "warning",
               "--max-waiting-requests", str(max(256, 2 * args.clients)), *args.server_args.split()]
        with launched("hearth-soak", cmd, port) as proc:
            return asyncio.run(soak(f"http://127.0.0.1:{port}", proc.pid, args))
    if not args.url:
        parser.error("give --url (and --pid) or --start-hearth")
    return asyncio.run(soak(args.url.rstrip("/"), args.pid, args))


if __name__ == "__main__":
    raise SystemExit(main())
