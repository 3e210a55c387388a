"""One chat completion from request body to response, as the server and the batch runner both build it:
the adapter over an engine, the body's validation, the constraint's compilation, the engine's outputs
gathered into the response, and the engine's refusals mapped onto the server's errors."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from hearth.engine.llm_engine import ContextLengthError, LLMEngine
from hearth.engine.loading.registry import ModelEntry
from hearth.engine.output.outputs import RequestOutput
from hearth.engine.output.structured_output import ConstraintError
from hearth.server.chat.adapter import ChatAdapter, ChatPlan, ChoiceState
from hearth.server.chat.protocol import ChatCompletionRequest
from hearth.server.errors import APIError, validation_message

VERSION = "0.1.0"


def chat_adapter(engine: LLMEngine, entry: ModelEntry) -> ChatAdapter:
    loaded = engine.loaded
    # Seeded tokens change with the weight format and with the rank count (partial sums are added in
    # another order): the fingerprint names both.
    ranks = engine.config.tensor_parallel_size
    weights = engine.config.quantization
    return ChatAdapter(
        model_id=entry.id,
        model_names=entry.names,
        tokenizer=engine.tokenizer,
        vocab_size=engine.vocab_size,
        max_model_len=engine.max_model_len,
        defaults=dict(entry.defaults),
        system_fingerprint=(f"hearth-{VERSION}-{str(loaded.dtype).removeprefix('torch.')}"
                            + (f"-{weights}" if weights != "none" else "") + f"-{loaded.device.type}"
                            + (f"-tp{ranks}" if ranks > 1 else "")),
        tool_call_format=entry.tool_call_format,
    )


def parse_request(body: Any, model: type[BaseModel] = ChatCompletionRequest) -> Any:
    """The `model` (the endpoint's request model) FastAPI would hand the endpoint, or the APIError the
    server answers the body with."""
    if body is None:  # FastAPI reads a null or absent body as a missing one
        errors = [{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}]
        raise validation_message(RequestValidationError(errors), model)
    try:
        return model.model_validate(body, from_attributes=True)  # as FastAPI validates
    except ValidationError as exc:
        errors = [{**error, "loc": ("body", *error["loc"])} for error in exc.errors(include_url=False)]
        raise validation_message(RequestValidationError(errors), model) from None


def compile_constraint(engine: LLMEngine, plan: ChatPlan) -> ChatPlan:
    """The plan with its grammar compiled into params.constraint (cached per spec); it may take a while,
    so the server calls it off the event loop and the engine thread."""
    if plan.constraint is None:
        return plan
    try:
        compiled = engine.grammar.compile(plan.constraint)
    except ImportError as exc:
        raise APIError(400, f"constrained decoding is unavailable: {exc} (install hearth[structured])",
                       param=plan.constraint_param) from exc
    except ConstraintError as exc:
        what = "JSON schema" if plan.constraint_param == "response_format" else "function parameters schema"
        raise APIError(400, f"invalid {what}: {exc}", param=plan.constraint_param, code="invalid_schema") from exc
    return replace(plan, params=replace(plan.params, constraint=compiled))


def request_error(exc: Exception) -> APIError:
    """The server's answer to a request the engine refused (add_request) or failed."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, ContextLengthError):
        return APIError(400, str(exc), param="messages", code="context_length_exceeded")
    if isinstance(exc, ValueError):
        return APIError(400, str(exc))
    return APIError(500, f"internal server error: {type(exc).__name__}: {exc}")


class Completion:
    """A non-streamed request's outputs, gathered step by step into its chat.completion body."""

    def __init__(self, adapter: ChatAdapter, plan: ChatPlan) -> None:
        self.adapter = adapter
        self.plan = plan
        self.states = [ChoiceState() for _ in range(plan.params.n)]
        # Prompt tokens whose KV came from the prefix cache (usage.prompt_tokens_details.cached_tokens).
        self.num_cached_tokens = 0

    def add(self, output: RequestOutput) -> None:
        if output.error is not None:
            raise APIError(500, output.error)
        self.adapter.accumulate(self.states, output)
        self.num_cached_tokens = output.num_cached_tokens

    @property
    def num_completion_tokens(self) -> int:
        return sum(s.num_tokens for s in self.states)

    def body(self) -> dict[str, Any]:
        return self.adapter.completion(self.plan, self.states, len(self.plan.prompt_token_ids),
                                       self.num_cached_tokens)
