"""The one adapter between HTTP and the engine: request -> prompt + SamplingParams, outputs -> response."""

from __future__ import annotations

import json
import math
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from hearth.engine.chat import ChatTemplateError, render_chat
from hearth.engine.output.outputs import RequestOutput
from hearth.engine.output.structured_output import JSON_OBJECT, JSON_SCHEMA, ConstraintSpec, tool_call_constraint
from hearth.engine.output.token_text import TokenText
from hearth.engine.sampling.sampling_params import SamplingParams
from hearth.engine.scheduling.sequence import TokenLogprobs
from hearth.server.chat.protocol import ChatCompletionRequest, TextPart
from hearth.server.chat.tool_calls import parse_tool_calls, render_call, tools_system_prompt
from hearth.server.chat.tool_history import check_tool_history
from hearth.server.chat.tool_plan import ToolPlan, tool_message, tool_plan
from hearth.server.core.sampling import SamplingRequest, sampling_params
from hearth.server.errors import APIError

# OpenAI reports tokens of (practically) zero probability with this logprob; JSON has no -inf.
MIN_LOGPROB = -9999.0


@dataclass(frozen=True)
class ChatPlan:
    request_id: str
    created: int
    prompt_token_ids: list[int]
    params: SamplingParams
    is_stream: bool
    include_usage: bool
    service_tier: str | None
    tools: ToolPlan | None = None
    # A response format or forced tool call to compile (off the engine thread) into params.constraint.
    constraint: ConstraintSpec | None = None
    constraint_param: str | None = None

    @property
    def parses_tool_calls(self) -> bool:
        return self.tools is not None and self.tools.choice != "none"


@dataclass
class ChoiceState:
    """A choice's output accumulated over the steps of a request."""

    text: str = ""
    num_tokens: int = 0
    logprobs: list[TokenLogprobs] = field(default_factory=list)
    finish_reason: str | None = None


class ChatAdapter:
    def __init__(self, model_id: str, model_names: tuple[str, ...], tokenizer, vocab_size: int, max_model_len: int,
                 defaults: dict[str, Any], system_fingerprint: str, tool_call_format: str = "hermes") -> None:
        self.tool_call_format = tool_call_format
        # Templates that take `tools` render tools, tool calls and tool results themselves.
        self.template_takes_tools = "tools" in (getattr(tokenizer, "chat_template", None) or "")
        self.model_id = model_id
        self.model_names = model_names
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        self.max_model_len = max_model_len
        self.defaults = defaults
        self.system_fingerprint = system_fingerprint
        self.token_text = TokenText(tokenizer)

    # ---- request -> plan ------------------------------------------------------------------------

    def check_model(self, name: str) -> None:
        if name not in self.model_names:
            raise APIError(404, f"The model `{name}` does not exist or you do not have access to it.",
                           param="model", code="model_not_found")

    def plan(self, req: ChatCompletionRequest) -> ChatPlan:
        self.check_model(req.model)
        tools = tool_plan(req, self.tool_call_format)
        messages = self.messages(req, tools)
        constraint, constraint_param = self.constraint(req, tools, messages)
        template_tools = None
        if tools is not None and tools.choice != "none":
            offered = [{"type": "function", "function": f} for f in tools.functions]
            if self.template_takes_tools:
                template_tools = offered
            else:
                messages = self._with_system(messages, tools_system_prompt(tools.functions))
        try:
            prompt = render_chat(self.tokenizer, messages, template_tools)
        except ChatTemplateError as exc:
            raise APIError(400, str(exc), param="messages") from exc
        params = self.sampling_params(req)
        wanted = params.max_tokens or 1
        if len(prompt) + wanted > self.max_model_len:
            raise APIError(
                400,
                f"This model's maximum context length is {self.max_model_len} tokens. However, you requested "
                f"{len(prompt) + wanted} tokens ({len(prompt)} in the messages, {wanted} in the completion). "
                "Please reduce the length of the messages or completion.",
                param="messages", code="context_length_exceeded",
            )
        if req.stream_options is not None and not req.stream:
            raise APIError(400, "stream_options is only allowed when stream is true", param="stream_options")
        return ChatPlan(
            request_id=f"chatcmpl-{uuid.uuid4().hex}",
            created=int(time.time()),
            prompt_token_ids=prompt,
            params=params,
            is_stream=bool(req.stream),
            include_usage=bool(req.stream_options and req.stream_options.include_usage),
            service_tier=req.service_tier,
            tools=tools,
            constraint=constraint,
            constraint_param=constraint_param,
        )

    @staticmethod
    def _with_system(messages: list[dict[str, Any]], text: str) -> list[dict[str, Any]]:
        if messages and messages[0]["role"] == "system":
            first = dict(messages[0], content=f"{messages[0]['content']}\n\n{text}")
            return [first, *messages[1:]]
        return [{"role": "system", "content": text}, *messages]

    def constraint(self, req: ChatCompletionRequest, tools: ToolPlan | None, messages: list[dict[str, Any]]
                   ) -> tuple[ConstraintSpec | None, str | None]:
        """The grammar the output must follow: a forced tool call, or a JSON response format."""
        fmt = req.response_format
        wants_json = fmt is not None and fmt.type != "text"
        if tools is not None and tools.is_forced:
            if wants_json:
                raise APIError(400, "response_format json_object/json_schema cannot be combined with a forced "
                               "tool call (tool_choice 'required' or a named function)", param="response_format")
            forced = None if tools.choice == "required" else tools.choice
            return tool_call_constraint(tools.functions, forced, tools.is_parallel, tools.call_format), "tools"
        if not wants_json:
            return None, None
        if tools is not None and tools.choice != "none":
            raise APIError(400, "response_format json_object/json_schema with tools is only supported with "
                           "tool_choice 'none'", param="response_format")
        if fmt.type == "json_object":
            if not any("json" in (m.get("content") or "").lower() for m in messages):
                raise APIError(400, "'messages' must contain the word 'json' in some form, to use 'response_format' "
                               "of type 'json_object'.", param="messages")
            return ConstraintSpec.of(JSON_OBJECT), "response_format"
        schema = fmt.json_schema.schema_
        if schema is None:
            raise APIError(400, "response_format.json_schema.schema is required", param="response_format")
        return ConstraintSpec.of(JSON_SCHEMA, schema, is_strict=bool(fmt.json_schema.strict)), "response_format"

    @staticmethod
    def _text(content: Any, where: str) -> str | None:
        if content is None or isinstance(content, str):
            return content
        texts = []
        for index, part in enumerate(content):
            if isinstance(part, TextPart):
                texts.append(part.text)
            elif getattr(part, "type", None) == "refusal":
                texts.append(part.refusal)
            else:
                raise APIError(400, f"content parts of type '{part.type}' are not supported: this model reads text only",
                               param=f"{where}.content.{index}.type")
        return "\n".join(texts)

    def messages(self, req: ChatCompletionRequest, tools: ToolPlan | None = None) -> list[dict[str, Any]]:
        """Plain dicts for the chat template; tool calls and results rendered as the template can take them."""
        check_tool_history(req.messages)
        rendered = []
        call_format = tools.call_format if tools is not None else self.tool_call_format
        for index, message in enumerate(req.messages):
            where = f"messages.{index}"
            role = message.role
            content = self._text(message.content, where)
            if role == "developer":
                role = "system"
            entry: dict[str, Any] = {"role": role, "content": content if content is not None else ""}
            if getattr(message, "name", None) and role != "function":
                entry["name"] = message.name
            if role == "assistant":
                calls = [(c.id, c.function.name, c.function.arguments) for c in message.tool_calls or []]
                if message.function_call is not None:
                    calls.append((None, message.function_call.name, message.function_call.arguments))
                if calls and self.template_takes_tools:
                    entry["tool_calls"] = [
                        {"id": call_id, "type": "function", "function": {"name": name, "arguments": _loads(args)}}
                        for call_id, name, args in calls
                    ]
                elif calls:
                    texts = [entry["content"]] if entry["content"] else []
                    entry["content"] = "\n".join(texts + [render_call(n, a, call_format) for _, n, a in calls])
            elif role in ("tool", "function"):
                if self.template_takes_tools:
                    entry["role"] = "tool"
                    if role == "tool":
                        entry["tool_call_id"] = message.tool_call_id
                    else:
                        entry["name"] = message.name
                else:
                    entry = {"role": "user", "content": f"<tool_response>\n{entry['content']}\n</tool_response>"}
            rendered.append(entry)
        return rendered

    def sampling_params(self, req: ChatCompletionRequest) -> SamplingParams:
        if req.max_tokens is not None and req.max_completion_tokens is not None and req.max_tokens != req.max_completion_tokens:
            raise APIError(400, "max_tokens and max_completion_tokens disagree; set only max_completion_tokens",
                           param="max_tokens")
        max_tokens = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
        if max_tokens is None:
            max_tokens = self.defaults.get("max_tokens")
        names = {"max_tokens": "max_completion_tokens"} if req.max_completion_tokens is not None else {}
        fields = SamplingRequest(
            n=req.n, max_tokens=max_tokens, temperature=req.temperature, top_p=req.top_p, top_k=req.top_k,
            min_p=req.min_p, frequency_penalty=req.frequency_penalty, presence_penalty=req.presence_penalty,
            repetition_penalty=req.repetition_penalty, logit_bias=req.logit_bias, seed=req.seed, stop=req.stop,
            min_tokens=req.min_tokens, logprobs=bool(req.logprobs), top_logprobs=req.top_logprobs, names=names,
        )
        return sampling_params(fields, self.defaults, self.vocab_size)

    # ---- outputs -> response --------------------------------------------------------------------

    @staticmethod
    def accumulate(states: list[ChoiceState], output: RequestOutput) -> None:
        for delta in output.choices:
            state = states[delta.index]
            state.text += delta.text
            state.num_tokens += len(delta.token_ids)
            state.logprobs.extend(delta.logprobs)
            if delta.finish_reason is not None:
                state.finish_reason = delta.finish_reason

    def _entry(self, token_id: int, logprob: float) -> dict[str, Any]:
        text, raw = self.token_text.get(token_id)
        return {"token": text, "logprob": max(logprob, MIN_LOGPROB) if not math.isnan(logprob) else MIN_LOGPROB,
                "bytes": list(raw)}

    def logprobs_content(self, records: list[TokenLogprobs]) -> list[dict[str, Any]]:
        content = []
        for record in records:
            entry = self._entry(record.token_id, record.logprob)
            entry["top_logprobs"] = [self._entry(t, lp) for t, lp in record.top]
            content.append(entry)
        return content

    def usage(self, num_prompt: int, num_completion: int, num_cached: int = 0) -> dict[str, Any]:
        """OpenAI's usage; cached_tokens: prompt tokens whose KV came from the prefix cache."""
        return {"prompt_tokens": num_prompt, "completion_tokens": num_completion,
                "total_tokens": num_prompt + num_completion, "prompt_tokens_details": {"cached_tokens": num_cached}}

    def completion(self, plan: ChatPlan, states: list[ChoiceState], num_prompt: int,
                   num_cached: int = 0) -> dict[str, Any]:
        choices = []
        for index, state in enumerate(states):
            logprobs = {"content": self.logprobs_content(state.logprobs), "refusal": None} if plan.params.logprobs else None
            message: dict[str, Any] = {"role": "assistant", "content": state.text, "refusal": None}
            finish_reason = state.finish_reason
            if plan.parses_tool_calls:
                content, calls = parse_tool_calls(state.text, plan.tools.call_format, plan.tools.names)
                message, finish_reason = tool_message(plan.tools, content, calls, finish_reason)
            choices.append({"index": index, "message": message, "logprobs": logprobs, "finish_reason": finish_reason})
        return {
            "id": plan.request_id,
            "object": "chat.completion",
            "created": plan.created,
            "model": self.model_id,
            "choices": choices,
            "usage": self.usage(num_prompt, sum(s.num_tokens for s in states), num_cached),
            "service_tier": plan.service_tier,
            "system_fingerprint": self.system_fingerprint,
        }

    def chunk(self, plan: ChatPlan, choices: list[dict[str, Any]], usage: dict[str, Any] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": plan.request_id,
            "object": "chat.completion.chunk",
            "created": plan.created,
            "model": self.model_id,
            "choices": choices,
            "service_tier": plan.service_tier,
            "system_fingerprint": self.system_fingerprint,
        }
        if plan.include_usage:
            body["usage"] = usage
        return body


def _loads(arguments: str) -> Any:
    """Tool-call arguments as the chat template expects them: a dict when they are JSON."""
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments
