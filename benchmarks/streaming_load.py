"""A load of streaming chat clients against an OpenAI-compatible server: each request's time to first token,
time per output token and output tokens (RequestResult), and a concurrency level's totals (LevelResult).
Shared by bench_serving.py, bench_prefix.py and soak.py."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field

import httpx
import numpy as np

PROMPTS = [
    "Write a long, detailed story about a lighthouse keeper who finds a message in a bottle.",
    "Explain in detail how a steam engine works, step by step, for a curious student.",
    "Write a long essay on the history of the printing press and its effects on Europe.",
    "Describe, in many paragraphs, a day in the life of a medieval blacksmith.",
    "Give a detailed guide to planting and caring for a vegetable garden through the seasons.",
    "Write a long letter from an astronaut on the Moon to her family on Earth.",
    "Explain in depth how the human heart pumps blood, with every chamber and valve.",
    "Tell a long adventure story about two friends crossing a desert on camels.",
]


@dataclass
class RequestResult:
    ttft: float = float("nan")        # seconds, send -> first content chunk
    latency: float = float("nan")     # seconds, send -> end of stream
    usage_tokens: int | None = None   # usage.completion_tokens, when streamed
    chunks: int = 0                   # content chunks received
    error: str | None = None

    @property
    def output_tokens(self) -> int:
        return self.usage_tokens if self.usage_tokens is not None else self.chunks

    def tpot(self) -> float | None:
        """Time per output token after the first: (latency - TTFT) / (output_tokens - 1); None below 2."""
        return (self.latency - self.ttft) / (self.output_tokens - 1) if self.output_tokens > 1 else None


@dataclass
class LevelResult:
    concurrency: int
    wall: float
    results: list[RequestResult] = field(default_factory=list)

    def summary(self) -> dict[str, float]:
        """out tok/s = sum(output tokens) / wall; TTFT p50/p90 and TPOT p50 over the completed requests."""
        ok = [r for r in self.results if r.error is None]
        tpots = [t for r in ok if (t := r.tpot()) is not None]
        ttfts = [r.ttft for r in ok if r.chunks > 0]
        pct = lambda xs, q: float(np.percentile(xs, q)) * 1e3 if xs else float("nan")  # in ms
        tokens = sum(r.output_tokens for r in ok)
        return {"tok_s": tokens / self.wall, "req_s": len(ok) / self.wall, "ttft_p50": pct(ttfts, 50),
                "ttft_p90": pct(ttfts, 90), "tpot_p50": pct(tpots, 50), "tokens": tokens, "ok": len(ok),
                "errors": len(self.results) - len(ok),
                "usage": sum(r.usage_tokens for r in ok if r.usage_tokens is not None),
                "usage_chunks": sum(r.chunks for r in ok if r.usage_tokens is not None),
                "no_usage": sum(r.usage_tokens is None for r in ok)}


async def stream_one(client: httpx.AsyncClient, url: str, model: str, index: int, args) -> RequestResult:
    """Send request `index` and time its stream (TTFT at the first non-empty delta.content)."""
    body = {"model": model, "messages": [{"role": "user", "content": PROMPTS[index % len(PROMPTS)]}],
            "stream": True, "stream_options": {"include_usage": True}, "temperature": args.temperature,
            "max_completion_tokens": args.max_tokens, "seed": args.seed + index}
    if getattr(args, "ignore_eos", False):
        body["min_tokens"] = args.max_tokens  # hearth's extension: EOS is banned until max tokens are out
    if getattr(args, "response_format", None):
        body["response_format"] = args.response_format
    result = RequestResult()
    start = time.perf_counter()
    try:
        async with client.stream("POST", f"{url}/chat/completions", json=body) as resp:
            if resp.status_code != 200:
                result.error = f"HTTP {resp.status_code}: {(await resp.aread())[:200]!r}"
                return result
            async for line in resp.aiter_lines():
                if not line.startswith("data:") or (data := line[5:].strip()) == "[DONE]":
                    continue
                chunk = json.loads(data)
                if "error" in chunk:
                    result.error = str(chunk["error"])[:200]
                    return result
                if any((c.get("delta") or {}).get("content") for c in chunk.get("choices") or []):
                    if result.chunks == 0:
                        result.ttft = time.perf_counter() - start
                    result.chunks += 1
                if chunk.get("usage"):
                    result.usage_tokens = chunk["usage"].get("completion_tokens")
        result.latency = time.perf_counter() - start
    except (httpx.HTTPError, json.JSONDecodeError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    return result


async def run_level(url: str, model: str, concurrency: int, num_requests: int, args) -> LevelResult:
    """C workers send requests back to back, pulling indices 0..num_requests-1 from one shared counter."""
    next_index = iter(range(num_requests))
    results: list[RequestResult] = []
    limits = httpx.Limits(max_connections=concurrency + 1, max_keepalive_connections=concurrency + 1)
    async with httpx.AsyncClient(timeout=args.request_timeout, limits=limits, trust_env=False) as client:
        async def worker() -> None:
            for index in next_index:
                results.append(await stream_one(client, url, model, index, args))

        start = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(concurrency))), args.level_timeout)
        return LevelResult(concurrency, time.perf_counter() - start, results)
