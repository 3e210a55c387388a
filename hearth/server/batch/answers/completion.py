"""A /v1/completions line: the completion plan and CompletionRun the server's endpoint runs, each prompt's
engine requests (its scoring, then its generation) added one after the other as the run orders them."""

from __future__ import annotations

from typing import Any

from hearth.engine.llm_engine import LLMEngine
from hearth.engine.output.outputs import RequestOutput
from hearth.server.batch.answers.answer import check_fits, refuse_stream
from hearth.server.chat.adapter import ChatAdapter
from hearth.server.chat.completion import parse_request
from hearth.server.completions.plan import plan_completion
from hearth.server.completions.protocol import CompletionRequest
from hearth.server.completions.run import GENERATED, SCORED, CompletionRun, EngineRequest
from hearth.server.errors import APIError
from hearth.server.http.completions import engine_error


class CompletionAnswer:
    def __init__(self, engine: LLMEngine, adapter: ChatAdapter, body: Any) -> None:
        request = parse_request(body, CompletionRequest)
        refuse_stream(request.stream)
        plan = plan_completion(adapter, request)
        check_fits(engine, plan.best_of, "best_of" if request.best_of is not None else "n")
        self.run = CompletionRun(adapter, plan)
        # Engine request id -> (prompt index, SCORED or GENERATED, the request that follows it).
        self._running: dict[str, tuple[int, str, EngineRequest | None]] = {}
        self._num_open = len(plan.prompts)

    def start(self) -> list[EngineRequest]:
        requests = []
        for index in range(len(self.run.plan.prompts)):
            scoring, generation = self.run.engine_requests(index)
            if scoring is not None:
                self._running[scoring.request_id] = (index, SCORED, generation)
                requests.append(scoring)
            else:
                requests += self._generate(index, generation)
        return requests

    def _generate(self, index: int, generation: EngineRequest | None) -> list[EngineRequest]:
        self.run.add(index, SCORED, None)  # the end of the prompt's scoring
        if generation is None:
            self._num_open -= 1
            return []
        self._running[generation.request_id] = (index, GENERATED, None)
        return [generation]

    def add(self, output: RequestOutput) -> list[EngineRequest]:
        index, kind, then = self._running[output.request_id]
        self.run.add(index, kind, output)
        if not output.is_finished:
            return []
        del self._running[output.request_id]
        if kind == SCORED:
            return self._generate(index, then)
        self._num_open -= 1
        return []

    @property
    def is_done(self) -> bool:
        return self._num_open == 0

    @property
    def num_completion_tokens(self) -> int:
        return self.run.num_completion_tokens

    def body(self) -> dict[str, Any]:
        return self.run.body()

    def error(self, exc: Exception) -> APIError:
        return engine_error(exc, is_draining=False)
