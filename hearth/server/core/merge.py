"""Several async iterators read as one, items tagged with their source's index, in arrival order."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import TypeVar

T = TypeVar("T")
_END = object()


async def merged(sources: list[AsyncIterator[T]]) -> AsyncIterator[tuple[int, T]]:
    """(index, item) as each source yields it. The first error of a source ends the whole iteration
    with that error; ending (or leaving) it early cancels every source, whose own clean-up then runs (an
    engine request's abort)."""
    if len(sources) == 1:  # no tasks: the consumer's cancellation reaches the source directly
        async with aclosing(sources[0]) as source:
            async for item in source:
                yield 0, item
        return
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(index: int, source: AsyncIterator[T]) -> None:
        try:
            async with aclosing(source):
                async for item in source:
                    await queue.put((index, item, None))
        except Exception as exc:
            await queue.put((index, _END, exc))
            return
        await queue.put((index, _END, None))

    tasks = [asyncio.ensure_future(pump(i, s)) for i, s in enumerate(sources)]
    try:
        remaining = len(tasks)
        while remaining:
            index, item, error = await queue.get()
            if error is not None:
                raise error
            if item is _END:
                remaining -= 1
                continue
            yield index, item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
