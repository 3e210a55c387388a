"""Cancels work for a client that has gone away.

A non-streaming response sends nothing until the end, so the server would only notice a dropped
client when writing the answer; meanwhile its sequences would hold KV blocks and batch slots. Polling
the connection while waiting lets the request be aborted (its generator closed, the engine told at its
next step) within a poll interval of the client leaving.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import TypeVar

from starlette.requests import Request

T = TypeVar("T")
POLL_INTERVAL_S = 0.1


class ClientDisconnected(Exception):
    """The client closed the connection before its response was ready."""


async def unless_disconnected(request: Request, work: Awaitable[T], poll_interval_s: float = POLL_INTERVAL_S) -> T:
    """The result of `work`, or ClientDisconnected (with `work` cancelled) once the client is gone."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=poll_interval_s)
            if done:
                return task.result()
            if await request.is_disconnected():
                raise ClientDisconnected
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
