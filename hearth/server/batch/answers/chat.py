"""A /v1/chat/completions line: chat's plan and Completion, as the server's endpoint builds them."""

from __future__ import annotations

from typing import Any

from hearth.engine.llm_engine import LLMEngine
from hearth.engine.output.outputs import RequestOutput
from hearth.server.batch.answers.answer import check_fits, refuse_stream
from hearth.server.chat.adapter import ChatAdapter
from hearth.server.chat.completion import Completion, compile_constraint, parse_request, request_error
from hearth.server.completions.run import EngineRequest
from hearth.server.errors import APIError


class ChatAnswer:
    def __init__(self, engine: LLMEngine, adapter: ChatAdapter, body: Any) -> None:
        request = parse_request(body)
        refuse_stream(request.stream)
        plan = compile_constraint(engine, adapter.plan(request))
        check_fits(engine, plan.params.n, "n")
        self.completion = Completion(adapter, plan)
        self.is_done = False

    def start(self) -> list[EngineRequest]:
        plan = self.completion.plan
        return [EngineRequest(plan.request_id, plan.prompt_token_ids, plan.params)]

    def add(self, output: RequestOutput) -> list[EngineRequest]:
        self.completion.add(output)
        self.is_done = output.is_finished
        return []

    @property
    def num_completion_tokens(self) -> int:
        return self.completion.num_completion_tokens

    def body(self) -> dict[str, Any]:
        return self.completion.body()

    def error(self, exc: Exception) -> APIError:
        return request_error(exc)
