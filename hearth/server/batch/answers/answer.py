"""What a batch line's answer does, whatever its API: the engine requests it needs, each added when the
answer asks for it, their outputs gathered into the body the server's endpoint answers non-streamed."""

from __future__ import annotations

from typing import Any, Protocol

from hearth.engine.llm_engine import LLMEngine
from hearth.engine.output.outputs import RequestOutput
from hearth.server.completions.run import EngineRequest
from hearth.server.errors import APIError


class Answer(Protocol):
    def start(self) -> list[EngineRequest]:
        """The engine requests to add now."""

    def add(self, output: RequestOutput) -> list[EngineRequest]:
        """One output of one of its requests (APIError when the engine failed it); the requests to add next."""

    @property
    def is_done(self) -> bool:
        """Every request has finished: body() is the answer."""

    @property
    def num_completion_tokens(self) -> int: ...

    def body(self) -> dict[str, Any]: ...

    def error(self, exc: Exception) -> APIError:
        """The server's answer to a request of this line that the engine refused or failed."""


def refuse_stream(stream: bool | None) -> None:
    if stream:
        raise APIError(400, "stream is not supported in a batch run: each result is written whole",
                       param="stream", code="invalid_value")


def check_fits(engine: LLMEngine, num_seqs: int, param: str) -> None:
    """A request of num_seqs sequences can be scheduled: above max_num_seqs it would wait for slots forever."""
    if num_seqs > engine.config.max_num_seqs:
        raise APIError(400, f"{param}={num_seqs} is more than this engine's max_num_seqs "
                       f"({engine.config.max_num_seqs}): its choices could never run together",
                       param=param, code="invalid_value")
