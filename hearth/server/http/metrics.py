"""Prometheus metrics, served at /metrics; every name starts with hearth_ (listed in the README).

Request figures are recorded as requests run (track() wraps a request's engine outputs; the middleware
counts responses by status); engine figures (sequences, KV blocks, preemptions, prefix-cache hit rate)
are read from LLMEngine.stats() at scrape time, so they cost nothing between scrapes.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hearth.engine.output.outputs import RequestOutput

CHAT_PATH = "/v1/chat/completions"
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0)
TPOT_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5)
# A client that went away before its response: nginx's convention, so dashboards can tell it apart.
CLIENT_CLOSED = 499


class _EngineCollector(Collector):
    def __init__(self, stats: Callable[[], dict[str, Any]], num_waiting: Callable[[], int]) -> None:
        self._stats = stats
        self._num_waiting = num_waiting

    def collect(self):
        stats = self._stats()
        gauges = [
            ("hearth_running_seqs", "Sequences in the engine's running queue", stats["num_running_seqs"]),
            ("hearth_waiting_seqs", "Sequences in the engine's waiting queue", stats["num_waiting_seqs"]),
            ("hearth_waiting_requests", "Requests counted against --max-waiting-requests", self._num_waiting()),
            ("hearth_kv_blocks_used", "KV cache blocks in use", stats["kv_blocks_used"]),
            ("hearth_kv_blocks_total", "KV cache blocks in all", stats["kv_blocks_total"]),
        ]
        if "prefix_cache_hit_rate" in stats:
            gauges.append(("hearth_prefix_cache_hit_rate", "Share of prompt tokens found in the prefix cache",
                           stats["prefix_cache_hit_rate"]))
        for name, doc, value in gauges:
            yield GaugeMetricFamily(name, doc, value=value)
        yield CounterMetricFamily("hearth_preemptions", "Sequences preempted for KV blocks (recomputed later)",
                                  value=stats.get("num_preemptions", 0))


class Metrics:
    def __init__(self, stats: Callable[[], dict[str, Any]], num_waiting: Callable[[], int]) -> None:
        # A registry per app: several apps in one process (tests) do not collide.
        self.registry = CollectorRegistry()
        self.registry.register(_EngineCollector(stats, num_waiting))
        r = self.registry
        self.requests = Counter("hearth_requests", "Chat completion responses by HTTP status", ["status"], registry=r)
        self.finish_reasons = Counter("hearth_request_finish_reasons", "Choices ended, by finish reason "
                                      "(stop, length, abort, error)", ["finish_reason"], registry=r)
        self.prompt_tokens = Counter("hearth_prompt_tokens", "Prompt tokens of requests run", registry=r)
        self.generation_tokens = Counter("hearth_generation_tokens", "Tokens generated", registry=r)
        self.ttft = Histogram("hearth_time_to_first_token_seconds", "Arrival to first generated token",
                              buckets=LATENCY_BUCKETS, registry=r)
        self.tpot = Histogram("hearth_time_per_output_token_seconds", "Mean time between a request's later tokens",
                              buckets=TPOT_BUCKETS, registry=r)
        self.e2e = Histogram("hearth_e2e_request_latency_seconds", "Arrival to the request's end",
                             buckets=LATENCY_BUCKETS, registry=r)
        self.queue_time = Histogram("hearth_request_queue_time_seconds", "Arrival to first scheduled in the engine",
                                    buckets=LATENCY_BUCKETS, registry=r)

    def response(self) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)

    async def track(self, outputs: AsyncIterator[RequestOutput], arrival: float, n: int
                    ) -> AsyncIterator[RequestOutput]:
        """Yields `outputs`, recording the request's timings, tokens and finish reasons; closes `outputs`
        however it ends (so a consumer that goes away still aborts the request)."""
        first = last = None
        num_steps = num_prompt = num_generated = 0
        num_finished = 0
        is_queue_seen = False
        try:
            async with aclosing(outputs):
                async for output in outputs:
                    now = time.monotonic()
                    if not is_queue_seen and output.first_scheduled_time is not None:
                        self.queue_time.observe(max(0.0, output.first_scheduled_time - arrival))
                        is_queue_seen = True
                    if any(delta.token_ids for delta in output.choices):
                        if first is None:
                            first = now
                            self.ttft.observe(now - arrival)
                        last = now
                        num_steps += 1
                    num_prompt, num_generated = output.num_prompt_tokens, output.num_completion_tokens
                    if output.error is not None:
                        self.finish_reasons.labels("error").inc(n - num_finished)
                        num_finished = n
                    for delta in output.choices:
                        if delta.finish_reason is not None:
                            self.finish_reasons.labels(delta.finish_reason).inc()
                            num_finished += 1
                    yield output
        finally:
            if num_finished < n:  # client gone, shutdown, or an exception: the rest were aborted
                self.finish_reasons.labels("abort").inc(n - num_finished)
            self.e2e.observe(time.monotonic() - arrival)
            self.prompt_tokens.inc(num_prompt)
            self.generation_tokens.inc(num_generated)
            if num_steps > 1:
                self.tpot.observe((last - first) / (num_steps - 1))


class MetricsMiddleware:
    """Counts chat completion responses by status, including the 401/413/429/503 given before the route."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != CHAT_PATH:
            await self.app(scope, receive, send)
            return

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.metrics.requests.labels(str(message["status"])).inc()
            await send(message)

        await self.app(scope, receive, counting_send)
