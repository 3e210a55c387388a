"""Admission: a bounded number of requests may wait; one more is refused with 429 and Retry-After.

Waiting means accepted but not yet running: being planned (tokenized, grammar compiled), queued for
the engine, or in the engine's waiting queue. Running requests are bounded by the engine itself
(--max-num-seqs and the KV cache), so this bounds the memory and latency a burst can cause.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from hearth.server.errors import APIError

# Seconds a refused client is asked to wait: about the time a few decode steps free a slot in.
RETRY_AFTER_S = 1


class Admission:
    def __init__(self, max_waiting: int, num_queued: Callable[[], int]) -> None:
        self.max_waiting = max_waiting
        self._num_queued = num_queued
        self._num_planning = 0

    @property
    def num_waiting(self) -> int:
        return self._num_planning + self._num_queued()

    @contextmanager
    def planning(self) -> Iterator[None]:
        """Admit a request (or raise the 429) and count it as waiting while the block runs; from the
        engine's queue on, the engine's count takes over."""
        if self.num_waiting >= self.max_waiting:
            raise APIError(429, f"The server is busy: {self.max_waiting} requests are already waiting. "
                           f"Please retry after {RETRY_AFTER_S} s.", type="requests", code="rate_limit_exceeded",
                           headers={"Retry-After": str(RETRY_AFTER_S)})
        self._num_planning += 1
        try:
            yield
        finally:
            self._num_planning -= 1
