"""Batch lines through the server's adapter and the engine, stepped in this thread, with no HTTP.

Lines are read only as far ahead as the engine can take them: enough requests wait to fill every sequence
slot a step can free (max_num_seqs), as long as their prompts fit the free KV cache. Results come out in
completion order.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from hearth.engine.llm_engine import LLMEngine
from hearth.server.batch.requests_file import BatchLine
from hearth.server.batch.results_file import error_record, record
from hearth.server.chat.adapter import ChatAdapter
from hearth.server.chat.completion import Completion, compile_constraint, parse_request, request_error
from hearth.server.errors import APIError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchResult:
    line: BatchLine
    record: dict[str, Any]
    num_completion_tokens: int = 0

    @property
    def status(self) -> int:
        return self.record["response"]["status_code"]


@dataclass
class _Live:
    line: BatchLine
    completion: Completion
    has_output: bool = False

    @property
    def num_seqs(self) -> int:
        return self.completion.plan.params.n

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.completion.plan.prompt_token_ids)


class BatchRunner:
    def __init__(self, engine: LLMEngine, adapter: ChatAdapter) -> None:
        self.engine = engine
        self.adapter = adapter
        self._live: dict[str, _Live] = {}
        # Requests added that have not yet produced a token: still waiting or prefilling.
        self._pending_seqs = 0
        self._pending_tokens = 0

    def run(self, lines: Iterable[BatchLine]) -> Iterator[BatchResult]:
        """One result per line, in completion order. Closing the iterator early aborts what is still running."""
        source = iter(lines)
        is_exhausted = False
        try:
            while True:
                while not is_exhausted and self._has_room():
                    line = next(source, None)
                    if line is None:
                        is_exhausted = True
                        break
                    failed = self._submit(line)
                    if failed is not None:
                        yield failed
                if not self._live:
                    if is_exhausted:
                        return
                    continue
                yield from self._step()
        finally:
            for request_id in list(self._live):
                self.engine.abort_request(request_id)
                self._forget(request_id)

    def _has_room(self) -> bool:
        if self._pending_seqs == 0:
            return True
        if self._pending_seqs >= self.engine.config.max_num_seqs:
            return False
        stats = self.engine.stats()
        free_tokens = (stats["kv_blocks_total"] - stats["kv_blocks_used"]) * self.engine.config.block_size
        return self._pending_tokens < free_tokens

    def _submit(self, line: BatchLine) -> BatchResult | None:
        if line.error is not None:
            return BatchResult(line, error_record(line.custom_id, line.error))
        try:
            request = parse_request(line.body)
            if request.stream:
                raise APIError(400, "stream is not supported in a batch run: each result is written whole",
                               param="stream", code="invalid_value")
            plan = compile_constraint(self.engine, self.adapter.plan(request))
            if plan.params.n > self.engine.config.max_num_seqs:  # the scheduler would wait for slots forever
                raise APIError(400, f"n={plan.params.n} is more than this engine's max_num_seqs "
                               f"({self.engine.config.max_num_seqs}): its choices could never run together",
                               param="n", code="invalid_value")
            self.engine.add_request(plan.request_id, plan.prompt_token_ids, plan.params)
        except Exception as exc:  # the server's answer to this body, whatever failed
            if not isinstance(exc, (APIError, ValueError)):
                logger.exception("line %d failed", line.number)
            return BatchResult(line, error_record(line.custom_id, request_error(exc)))
        live = _Live(line, Completion(self.adapter, plan))
        self._live[plan.request_id] = live
        self._pending_seqs += live.num_seqs
        self._pending_tokens += live.num_prompt_tokens
        return None

    def _forget(self, request_id: str) -> _Live:
        live = self._live.pop(request_id)
        if not live.has_output:
            self._pending_seqs -= live.num_seqs
            self._pending_tokens -= live.num_prompt_tokens
        return live

    def _step(self) -> Iterator[BatchResult]:
        try:
            outputs = self.engine.step()
        except Exception as exc:  # step() fails requests, not itself; this is a last resort, as in the server
            if self.engine.failure is not None:  # a rank died: stop here, a rerun resumes these lines
                raise
            logger.exception("engine step raised")
            for request_id in list(self._live):
                self.engine.abort_request(request_id)
                live = self._forget(request_id)
                yield BatchResult(live.line, error_record(live.line.custom_id, request_error(exc)),
                                  live.completion.num_completion_tokens)
            return
        for output in outputs:
            live = self._live.get(output.request_id)
            if live is None:
                continue
            if not live.has_output:
                live.has_output = True
                self._pending_seqs -= live.num_seqs
                self._pending_tokens -= live.num_prompt_tokens
            try:
                live.completion.add(output)
            except APIError as exc:  # the engine failed this request and has already dropped it
                self._forget(output.request_id)
                yield BatchResult(live.line, error_record(live.line.custom_id, exc), live.completion.num_completion_tokens)
                continue
            if output.is_finished:
                self._forget(output.request_id)
                body = live.completion.body()
                yield BatchResult(live.line, record(live.line.custom_id, 200, body, body["id"]),
                                  live.completion.num_completion_tokens)
