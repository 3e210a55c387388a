"""A batch line's answer by its url, one per API the server answers: built from the body by the endpoint's
own validation, plan and output code (APIError where the server would refuse the body)."""

from __future__ import annotations

from typing import Any

from hearth.engine.llm_engine import LLMEngine
from hearth.server.batch.answers.answer import Answer
from hearth.server.batch.answers.chat import ChatAnswer
from hearth.server.batch.answers.completion import CompletionAnswer
from hearth.server.batch.answers.response import ResponseAnswer
from hearth.server.chat.adapter import ChatAdapter

ANSWERS = {"/v1/chat/completions": ChatAnswer, "/v1/completions": CompletionAnswer, "/v1/responses": ResponseAnswer}


def answer_for(url: str, engine: LLMEngine, adapter: ChatAdapter, body: Any) -> Answer:
    return ANSWERS[url](engine, adapter, body)
