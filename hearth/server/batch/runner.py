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
from hearth.server.batch.answers import Answer, answer_for
from hearth.server.batch.requests_file import BatchLine
from hearth.server.batch.results_file import error_record, record
from hearth.server.chat.adapter import ChatAdapter
from hearth.server.chat.completion import request_error
from hearth.server.completions.run import EngineRequest
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
    """One engine request of a line (a completion line may run several, one after another per prompt)."""

    line: BatchLine
    answer: Answer
    num_seqs: int
    num_prompt_tokens: int
    has_output: bool = False


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
            answer = answer_for(line.url, self.engine, self.adapter, line.body)
        except Exception as exc:  # the server's answer to this body, whatever failed
            if not isinstance(exc, (APIError, ValueError)):
                logger.exception("line %d failed", line.number)
            return BatchResult(line, error_record(line.custom_id, request_error(exc)))
        return self._add(line, answer, answer.start())

    def _add(self, line: BatchLine, answer: Answer, requests: list[EngineRequest]) -> BatchResult | None:
        """Adds the line's next engine requests; its result once it is answered or has failed."""
        for request in requests:
            try:
                self.engine.add_request(*request)
            except Exception as exc:  # the engine refused it: as the server answers
                if not isinstance(exc, (APIError, ValueError)):
                    logger.exception("line %d failed", line.number)
                return self._fail(line, answer, answer.error(exc))
            live = _Live(line, answer, request.params.n, len(request.prompt_token_ids))
            self._live[request.request_id] = live
            self._pending_seqs += live.num_seqs
            self._pending_tokens += live.num_prompt_tokens
        if answer.is_done:
            body = answer.body()
            return BatchResult(line, record(line.custom_id, 200, body, body["id"]), answer.num_completion_tokens)
        return None

    def _fail(self, line: BatchLine, answer: Answer, error: APIError) -> BatchResult:
        """Aborts the line's other engine requests: it is answered with `error`."""
        for request_id in [rid for rid, live in self._live.items() if live.answer is answer]:
            self.engine.abort_request(request_id)
            self._forget(request_id)
        return BatchResult(line, error_record(line.custom_id, error), answer.num_completion_tokens)

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
            failed = {}
            for request_id in list(self._live):
                self.engine.abort_request(request_id)
                live = self._forget(request_id)
                failed.setdefault(id(live.answer), live)
            for live in failed.values():
                yield BatchResult(live.line, error_record(live.line.custom_id, request_error(exc)),
                                  live.answer.num_completion_tokens)
            return
        for output in outputs:
            live = self._live.get(output.request_id)
            if live is None:
                continue
            if not live.has_output:
                live.has_output = True
                self._pending_seqs -= live.num_seqs
                self._pending_tokens -= live.num_prompt_tokens
            if output.is_finished or output.error is not None:  # the engine has dropped it
                self._forget(output.request_id)
            try:
                requests = live.answer.add(output)
            except APIError as exc:  # the engine failed this request
                yield self._fail(live.line, live.answer, exc)
                continue
            if output.is_finished or requests:
                result = self._add(live.line, live.answer, requests)
                if result is not None:
                    yield result
