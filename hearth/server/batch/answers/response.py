"""A /v1/responses line: translated into chat's plan and gathered by ResponseOutput, as the server's
endpoint does; the body is the response object its last event carries."""

from __future__ import annotations

from typing import Any

from hearth.engine.llm_engine import LLMEngine
from hearth.engine.output.outputs import RequestOutput
from hearth.server.batch.answers.answer import refuse_stream
from hearth.server.chat.adapter import ChatAdapter
from hearth.server.chat.completion import compile_constraint, parse_request
from hearth.server.completions.run import EngineRequest
from hearth.server.errors import APIError
from hearth.server.http.completions import engine_error
from hearth.server.responses.output import ResponseOutput
from hearth.server.responses.protocol import ResponseRequest
from hearth.server.responses.translate import Names, chat_request


class ResponseAnswer:
    def __init__(self, engine: LLMEngine, adapter: ChatAdapter, body: Any) -> None:
        request = parse_request(body, ResponseRequest)
        refuse_stream(request.stream)
        self.names = Names()
        try:
            chat, self.names = chat_request(request)
            plan = compile_constraint(engine, adapter.plan(chat))
        except APIError as exc:
            raise self.names.error(exc) from exc
        self.output = ResponseOutput(adapter, plan, request)
        self.output.start()
        self._response: dict[str, Any] | None = None
        self.num_completion_tokens = 0

    def start(self) -> list[EngineRequest]:
        plan = self.output.plan
        return [EngineRequest(plan.request_id, plan.prompt_token_ids, plan.params)]

    def add(self, output: RequestOutput) -> list[EngineRequest]:
        if output.error is not None:
            raise self.error(APIError(500, output.error))
        self.output.add(output)
        self.num_completion_tokens = output.num_completion_tokens
        if output.is_finished:
            self._response = self.output.finish()[-1]["response"]
        return []

    @property
    def is_done(self) -> bool:
        return self._response is not None

    def body(self) -> dict[str, Any]:
        return self._response

    def error(self, exc: Exception) -> APIError:
        return self.names.error(engine_error(exc, is_draining=False, prompt_param="messages"))
