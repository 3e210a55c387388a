"""Runs LLMEngine.step() in a loop and hands each request's outputs to its asyncio queue.

torch releases the GIL inside its ops, so the event loop keeps serving HTTP while a step computes. The
command-line server runs this loop in the process's main thread and HTTP in a second one: the forward
ran 40-60% slower when stepped from a thread other than the one that loaded the model (oneDNN/OpenMP
per-thread state; measured in benchmarks/bench_engine_thread.py). start() runs it in a thread instead,
for in-process uses such as tests.
Adds and aborts reach the engine thread through a locked inbox and are applied between steps; a request
whose consumer goes away (client disconnect) is aborted and its memory freed at the next step.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass

from hearth.engine.llm_engine import LLMEngine
from hearth.engine.output.outputs import RequestOutput
from hearth.engine.sampling.sampling_params import SamplingParams

logger = logging.getLogger(__name__)


class EngineDeadError(RuntimeError):
    """The engine thread stopped (or is stopping): the request cannot run or finish."""


@dataclass
class _Pending:
    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams
    queue: asyncio.Queue
    loop: asyncio.AbstractEventLoop


class AsyncEngine:
    def __init__(self, engine: LLMEngine) -> None:
        self.engine = engine
        self._lock = threading.Lock()
        self._wakeup = threading.Event()
        self._adds: list[_Pending] = []
        self._aborts: list[str] = []
        self._queues: dict[str, tuple[asyncio.Queue, asyncio.AbstractEventLoop]] = {}
        self._is_running = False
        # Set once the loop has ended: later requests are refused instead of queued for no one.
        self._is_closed = False
        self._thread: threading.Thread | None = None
        self.num_steps = 0

    def start(self) -> None:
        """Run the engine loop in a background thread (no-op when it already runs)."""
        if self._thread is not None:
            return
        self._is_running = True
        self._is_closed = False
        self._thread = threading.Thread(target=self._loop, name="hearth-engine", daemon=True)
        self._thread.start()

    def run_forever(self, should_stop) -> None:
        """Run the engine loop in the calling thread until should_stop() is true."""
        self._is_running = True
        self._is_closed = False
        self._thread = threading.current_thread()
        try:
            self._loop(should_stop)
        finally:
            self._is_running = False
            self._close()

    def stop(self) -> None:
        self._is_running = False
        self._wakeup.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        self._thread = None
        self._close()

    def _close(self) -> None:
        """Refuse new requests; those still waiting for outputs (added, or running when the loop ended)
        get EngineDeadError rather than waiting for ever. Called once the loop has ended."""
        with self._lock:
            self._is_closed = True
            adds, self._adds = self._adds, []
        waiting = [(p.queue, p.loop) for p in adds] + list(self._queues.values())
        self._queues.clear()
        for queue, loop in waiting:
            with contextlib.suppress(RuntimeError):  # that request's event loop is already closed
                loop.call_soon_threadsafe(queue.put_nowait, EngineDeadError("the engine is not running"))

    def abort_all(self, error: BaseException) -> int:
        """End every request, handing `error` to its consumer; returns how many. Engine thread only."""
        self._drain_inbox()
        request_ids = list(self._queues)
        for request_id in request_ids:
            self.engine.abort_request(request_id)
            self._deliver(request_id, error)
        self._queues.clear()
        return len(request_ids)

    @property
    def is_idle(self) -> bool:
        """No request queued, running or waiting for its consumer to be told it finished."""
        with self._lock:
            has_adds = bool(self._adds)
        return not has_adds and not self._queues and not self.engine.has_unfinished_requests()

    def num_queued(self) -> int:
        """Requests handed to the engine that it has not started: in the inbox or its waiting queue
        (read from another thread: a count that may be one step old)."""
        with self._lock:
            num_adds = len(self._adds)
        return num_adds + self.engine.stats()["num_waiting_seqs"]

    @property
    def is_alive(self) -> bool:
        return (self._is_running and self._thread is not None and self._thread.is_alive()
                and self.engine.failure is None)

    def _deliver(self, request_id: str, item: RequestOutput | BaseException) -> None:
        target = self._queues.get(request_id)
        if target is None:
            return
        queue, loop = target
        loop.call_soon_threadsafe(queue.put_nowait, item)

    def _drain_inbox(self) -> None:
        with self._lock:
            adds, self._adds = self._adds, []
            aborts, self._aborts = self._aborts, []
        for pending in adds:
            self._queues[pending.request_id] = (pending.queue, pending.loop)
            try:
                self.engine.add_request(pending.request_id, pending.prompt_token_ids, pending.params)
            except Exception as exc:  # a bad request fails alone
                self._deliver(pending.request_id, exc)
                self._queues.pop(pending.request_id, None)
        for request_id in aborts:
            self.engine.abort_request(request_id)
            self._queues.pop(request_id, None)

    def _loop(self, should_stop=lambda: False) -> None:
        # A failed engine (a tensor-parallel rank died) ends the loop: its requests get EngineDeadError.
        while self._is_running and not should_stop() and self.engine.failure is None:
            self._drain_inbox()
            if not self.engine.has_unfinished_requests():
                self._wakeup.wait(timeout=0.2)
                self._wakeup.clear()
                continue
            try:
                outputs = self.engine.step()
            except Exception as exc:  # step() isolates request failures; this is a last resort
                logger.exception("engine step raised")
                failure = self.engine.failure
                error = exc if failure is None else EngineDeadError(f"the engine failed: {failure}")
                for request_id in list(self.engine.requests):
                    self.engine.abort_request(request_id)
                    self._deliver(request_id, error)
                continue
            self.num_steps += 1
            for output in outputs:
                self._deliver(output.request_id, output)
                if output.is_finished:
                    self._queues.pop(output.request_id, None)

    async def generate(self, request_id: str, prompt_token_ids: list[int], params: SamplingParams) -> AsyncIterator[RequestOutput]:
        queue: asyncio.Queue = asyncio.Queue()
        with self._lock:
            if not self.is_alive or self._is_closed:
                raise EngineDeadError("the engine is not running")
            self._adds.append(_Pending(request_id, prompt_token_ids, params, queue, asyncio.get_running_loop()))
        self._wakeup.set()
        is_finished = False
        try:
            while not is_finished:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                is_finished = item.is_finished
                yield item
        finally:
            if not is_finished:
                with self._lock:
                    self._aborts.append(request_id)
                self._wakeup.set()
