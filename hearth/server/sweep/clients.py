"""How a sweep sends its requests: to an engine in this process (through the batch runner, so through the
server's own adapter), or to a running OpenAI-compatible server (--url), so that peers sweep alike."""

from __future__ import annotations

import asyncio
import time
from typing import Any


class SweepRequestError(RuntimeError):
    """A request of the sweep was refused or failed; the message is the server's."""


def _checked(index: int, status: int, body: dict[str, Any], request: dict[str, Any]) -> dict[str, Any]:
    if status != 200:
        error = body.get("error", body)
        raise SweepRequestError(f"request {index} failed with {status}: {error}\nrequest: {request}")
    return body


class InProcessClient:
    """The engine stepped in this thread by hearth.server.batch's runner: every request in flight at once, read
    ahead as the KV cache allows."""

    def __init__(self, engine, entry) -> None:
        from hearth.server.batch.runner import BatchRunner
        from hearth.server.chat.completion import chat_adapter

        self.model = entry.id
        self.runner = BatchRunner(engine, chat_adapter(engine, entry))
        self.description = f"in-process engine ({entry.id}, max_num_seqs {engine.config.max_num_seqs})"

    def run(self, requests: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], float]:
        """Response bodies in the order of `requests`, and the wall time of the whole set."""
        from hearth.server.batch.requests_file import BatchLine

        lines = [BatchLine(number=i + 1, custom_id=str(i), body=body) for i, body in enumerate(requests)]
        start = time.perf_counter()
        results = {int(r.line.custom_id): r.record["response"] for r in self.runner.run(lines)}
        seconds = time.perf_counter() - start
        return [_checked(i, results[i]["status_code"], results[i]["body"], requests[i]) for i in range(len(requests))], seconds


class HTTPClient:
    """A running server's /v1/chat/completions, `concurrency` requests in flight."""

    def __init__(self, url: str, model: str | None, concurrency: int, timeout: float = 600.0) -> None:
        import httpx

        self.url = url.rstrip("/")
        self.concurrency = concurrency
        self.timeout = timeout
        if model is None:
            listed = httpx.get(f"{self.url}/v1/models", timeout=30).raise_for_status().json()["data"]
            model = listed[0]["id"]
        self.model = model
        self.description = f"{self.url} ({model}, {concurrency} concurrent requests)"

    def run(self, requests: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], float]:
        return asyncio.run(self._run(requests))

    async def _run(self, requests: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], float]:
        import httpx

        gate = asyncio.Semaphore(self.concurrency)
        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)

        async def send(client: httpx.AsyncClient, index: int) -> dict[str, Any]:
            async with gate:
                response = await client.post(f"{self.url}/v1/chat/completions", json=requests[index])
            return _checked(index, response.status_code, response.json(), requests[index])

        async with httpx.AsyncClient(timeout=self.timeout, limits=limits) as client:
            start = time.perf_counter()
            bodies = await asyncio.gather(*(send(client, i) for i in range(len(requests))))
            return list(bodies), time.perf_counter() - start
