"""A Responses request as the chat request it asks for, so that it runs chat's one plan (prompt, sampling,
tools, structured output); fields that need state or tools this server lacks are 400s naming them. Errors
the chat plan raises are renamed to the Responses fields they came from (Names)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from hearth.server.chat.protocol import ChatCompletionRequest
from hearth.server.errors import APIError, param_path
from hearth.server.responses.protocol import (
    FunctionCallItem,
    FunctionCallOutputItem,
    FunctionTool,
    InputText,
    MessageItem,
    OtherItem,
    Refusal,
    ResponseRequest,
)

LOGPROBS_INCLUDE = "message.output_text.logprobs"
# Request fields that need what a stateless server over one local model has not: set, they are 400s.
_REFUSED = {
    "background": "background responses need stored state; this server answers in the request",
    "store": "stored responses are not kept: this server is stateless (send the whole input each time)",
    "previous_response_id": "responses are not stored: send the previous output items as input instead",
    "conversation": "conversations are not stored: send the whole input each time",
    "prompt": "stored prompt templates are not available here",
    "prompt_cache_options": "prompt cache options are not supported (the prefix cache is automatic)",
    "context_management": "context management is not supported",
    "moderation": "moderation is not available here",
}
_ITEM_MODELS = {"message": MessageItem, "function_call": FunctionCallItem,
                "function_call_output": FunctionCallOutputItem}


@dataclass
class Names:
    """Chat request paths -> the Responses request's: where each chat message came from."""

    messages: list[str] = field(default_factory=list)
    # Per chat message index: the input items of its tool calls.
    calls: dict[int, list[str]] = field(default_factory=dict)

    def rename(self, param: str | None) -> str | None:
        if param is None:
            return None
        match = re.match(r"^messages\.(\d+)(\.tool_calls(?:\.(\d+))?[.\w]*)?(\..*)?$", param)
        if match:
            index, rest = int(match.group(1)), match.group(4) or ""
            if match.group(2) and index in self.calls:  # a call's item (the message's first call's)
                return self.calls[index][int(match.group(3) or 0)]
            return (self.messages[index] + rest) if index < len(self.messages) else "input"
        fixed = {"messages": "input", "max_completion_tokens": "max_output_tokens", "max_tokens": "max_output_tokens",
                 "logprobs": "top_logprobs"}
        if param in fixed:
            return fixed[param]
        if param.startswith("response_format"):
            return "text.format" + param.removeprefix("response_format").replace(".json_schema", "", 1)
        return re.sub(r"^tools\.(\d+)\.function", r"tools.\1", param)

    def error(self, exc: APIError) -> APIError:
        param = self.rename(exc.param)
        message = exc.message.replace("'messages'", "'input'")
        if exc.param and param != exc.param:
            message = message.replace(exc.param, param)
        return APIError(exc.status, message, param=param, code=exc.code, type=exc.type, headers=exc.headers)


def refuse_unsupported(req: ResponseRequest) -> None:
    for name, why in _REFUSED.items():
        value = getattr(req, name)
        if value is not None and value is not False and value != []:
            raise APIError(400, f"{name} is not supported: {why}", param=name, code="unsupported_parameter")
    for index, tool in enumerate(req.tools or []):
        if not isinstance(tool, FunctionTool):
            raise APIError(400, f"tools of type '{tool.type}' are not supported: only function tools run here "
                           "(no built-in tools)", param=f"tools.{index}.type", code="unsupported_parameter")
    if isinstance(req.tool_choice, dict):
        kind = req.tool_choice.get("type")
        raise APIError(400, f"tool_choice of type {kind!r} is not supported: use 'none', 'auto', 'required' or "
                       "a function", param="tool_choice", code="unsupported_parameter")
    if req.reasoning is not None:
        for name in ("effort", "summary", "generate_summary"):
            value = getattr(req.reasoning, name)
            if value is not None and not (name == "effort" and value == "none"):
                raise APIError(400, f"reasoning.{name} {value!r} cannot be honoured: this model does not reason "
                               "before it answers", param=f"reasoning.{name}", code="unsupported_parameter")
    for index, entry in enumerate(req.include or []):
        if entry != LOGPROBS_INCLUDE:
            raise APIError(400, f"include {entry!r} is not supported (only {LOGPROBS_INCLUDE!r})",
                           param=f"include.{index}", code="unsupported_parameter")
    checks = [("truncation", req.truncation == "auto", "truncation 'auto' is not supported: an input over the "
               "context is a 400 (truncation 'disabled')"),
              ("prompt_cache_retention", req.prompt_cache_retention == "24h", "prompt_cache_retention '24h' is not "
               "supported: cached prefixes live in memory"),
              ("text.verbosity", req.text is not None and req.text.verbosity not in (None, "medium"),
               "text.verbosity other than 'medium' cannot be honoured by this model"),
              ("stream_options", req.stream_options is not None and not req.stream,
               "stream_options is only allowed when stream is true"),
              ("stream_options.include_obfuscation", req.stream_options is not None
               and bool(req.stream_options.include_obfuscation), "stream obfuscation is not supported"),
              ("max_tool_calls", req.max_tool_calls is not None and req.max_tool_calls < 0,
               "max_tool_calls must be >= 0")]
    for param, is_refused, message in checks:
        if is_refused:
            raise APIError(400, message, param=param, code="unsupported_parameter")


def _text(content: str | list, where: str) -> str:
    if isinstance(content, str):
        return content
    texts = []
    for index, part in enumerate(content):
        if isinstance(part, InputText):
            texts.append(part.text)
        elif isinstance(part, Refusal):
            texts.append(part.refusal)
        else:
            raise APIError(400, f"content parts of type '{part.type}' are not supported: this model reads text only",
                           param=f"{where}.content.{index}.type", code="unsupported_parameter")
    return "\n".join(texts)


def _messages(req: ResponseRequest, names: Names) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    if req.instructions:
        messages.append({"role": "system", "content": req.instructions})
        names.messages.append("instructions")
    items = [MessageItem(role="user", content=req.input)] if isinstance(req.input, str) else req.input
    for index, item in enumerate(items):
        where = "input" if isinstance(req.input, str) else f"input.{index}"
        if isinstance(item, OtherItem):
            model = _ITEM_MODELS.get(item.type)
            if model is None:
                raise APIError(400, f"input items of type '{item.type}' are not supported: this server keeps no "
                               "state and runs no built-in tools", param=f"{where}.type", code="unsupported_parameter")
            try:
                model.model_validate(item.model_dump())
            except ValidationError as exc:
                first = exc.errors(include_url=False)[0]
                param = ".".join(p for p in (where, param_path(tuple(first["loc"]), model)) if p)
                raise APIError(400, f"Invalid value for '{param}': {first['msg']}", param=param,
                               code="invalid_value") from None
        if isinstance(item, MessageItem):
            messages.append({"role": item.role, "content": _text(item.content, where)})
            names.messages.append(where)
        elif isinstance(item, FunctionCallItem):
            call = {"id": item.call_id, "type": "function", "function": {"name": item.name, "arguments": item.arguments}}
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and (last.get("tool_calls") or not last["content"]):
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
                names.messages.append(where)
            names.calls.setdefault(len(messages) - 1, []).append(where)
        else:
            messages.append({"role": "tool", "tool_call_id": item.call_id, "content": _text(item.output, where)})
            names.messages.append(where)
    if not messages:
        raise APIError(400, "input must hold at least one item", param="input", code="invalid_value")
    return messages


def _response_format(req: ResponseRequest) -> dict[str, Any] | None:
    fmt = req.text.format if req.text is not None else None
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return {"type": "json_object"}
    schema = {"name": fmt.name, "schema": fmt.schema_, "description": fmt.description, "strict": fmt.strict}
    return {"type": "json_schema", "json_schema": {k: v for k, v in schema.items() if v is not None}}


def chat_request(req: ResponseRequest) -> tuple[ChatCompletionRequest, Names]:
    """The chat request `req` asks for, and how to name its fields back."""
    refuse_unsupported(req)
    names = Names()
    messages = _messages(req, names)
    wants_logprobs = req.top_logprobs is not None or LOGPROBS_INCLUDE in (req.include or [])
    body: dict[str, Any] = {
        "model": req.model, "messages": messages, "temperature": req.temperature, "top_p": req.top_p,
        "max_completion_tokens": req.max_output_tokens, "parallel_tool_calls": req.parallel_tool_calls,
        "response_format": _response_format(req), "service_tier": req.service_tier, "stream": req.stream,
        "logprobs": wants_logprobs or None, "top_logprobs": req.top_logprobs, "user": req.user,
    }
    if req.tools:
        body["tools"] = [{"type": "function", "function": t.model_dump(exclude={"type"}, exclude_none=True)}
                         for t in req.tools]
    if req.tool_choice is not None:
        choice = req.tool_choice
        body["tool_choice"] = choice if isinstance(choice, str) else {"type": "function",
                                                                      "function": {"name": choice.name}}
    try:
        return ChatCompletionRequest.model_validate({k: v for k, v in body.items() if v is not None}), names
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        param = names.rename(".".join(str(p) for p in first["loc"]))
        raise APIError(400, f"Invalid value for '{param}': {first['msg']}", param=param,
                       code="invalid_value") from None
