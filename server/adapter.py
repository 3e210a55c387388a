"""The one adapter between HTTP and the engine: request -> prompt + SamplingParams, outputs -> response."""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from engine.chat import ChatTemplateError, render_chat
from engine.outputs import RequestOutput
from engine.sampling_params import ParamError, SamplingParams
from engine.sequence import TokenLogprobs
from engine.token_text import TokenText
from server.errors import APIError
from server.protocol import ChatCompletionRequest, TextPart

# OpenAI reports tokens of (practically) zero probability with this logprob; JSON has no -inf.
MIN_LOGPROB = -9999.0

# SamplingParams field -> request field, where they differ.
_PARAM_NAMES = {"max_tokens": "max_completion_tokens", "stop_token_ids": "stop"}


@dataclass(frozen=True)
class ChatPlan:
    request_id: str
    created: int
    prompt_token_ids: list[int]
    params: SamplingParams
    is_stream: bool
    include_usage: bool
    service_tier: str | None


@dataclass
class ChoiceState:
    """A choice's output accumulated over the steps of a request."""

    text: str = ""
    num_tokens: int = 0
    logprobs: list[TokenLogprobs] = field(default_factory=list)
    finish_reason: str | None = None


class ChatAdapter:
    def __init__(self, model_id: str, model_names: tuple[str, ...], tokenizer, vocab_size: int, max_model_len: int,
                 defaults: dict[str, Any], system_fingerprint: str) -> None:
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
        self._reject_unsupported(req)
        messages = self.messages(req)
        try:
            prompt = render_chat(self.tokenizer, messages)
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
        )

    def _reject_unsupported(self, req: ChatCompletionRequest) -> None:
        if req.response_format is not None and req.response_format.type != "text":
            raise APIError(400, f"response_format type '{req.response_format.type}' is not implemented yet",
                           param="response_format")
        for name in ("tools", "tool_choice", "parallel_tool_calls", "functions", "function_call"):
            if getattr(req, name) is not None:
                raise APIError(400, f"{name} is not implemented yet", param=name)

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

    def messages(self, req: ChatCompletionRequest) -> list[dict[str, Any]]:
        rendered = []
        for index, message in enumerate(req.messages):
            where = f"messages.{index}"
            role = message.role
            content = self._text(message.content, where)
            if role == "developer":
                role = "system"
            entry: dict[str, Any] = {"role": role, "content": content if content is not None else ""}
            if getattr(message, "name", None):
                entry["name"] = message.name
            rendered.append(entry)
        return rendered

    def sampling_params(self, req: ChatCompletionRequest) -> SamplingParams:
        def pick(name: str, fallback: Any) -> Any:
            value = getattr(req, name)
            if value is not None:
                return value
            return self.defaults.get(name, fallback)

        if req.max_tokens is not None and req.max_completion_tokens is not None and req.max_tokens != req.max_completion_tokens:
            raise APIError(400, "max_tokens and max_completion_tokens disagree; set only max_completion_tokens",
                           param="max_tokens")
        max_tokens = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
        if max_tokens is None:
            max_tokens = self.defaults.get("max_tokens")
        logit_bias = {}
        for key, value in (req.logit_bias or {}).items():
            try:
                token_id = int(key)
            except ValueError:
                raise APIError(400, f"logit_bias keys must be token ids given as strings of integers, got {key!r}",
                               param="logit_bias") from None
            if not 0 <= token_id < self.vocab_size:
                raise APIError(400, f"logit_bias key {token_id} is not a token id of this model "
                               f"(vocab size {self.vocab_size})", param="logit_bias")
            logit_bias[token_id] = value
        stop = req.stop
        stop = (stop,) if isinstance(stop, str) else tuple(stop or ())
        try:
            return SamplingParams(
                n=req.n if req.n is not None else 1,
                max_tokens=max_tokens,
                temperature=pick("temperature", 1.0),
                top_p=pick("top_p", 1.0),
                top_k=pick("top_k", 0),
                min_p=pick("min_p", 0.0),
                frequency_penalty=pick("frequency_penalty", 0.0),
                presence_penalty=pick("presence_penalty", 0.0),
                repetition_penalty=pick("repetition_penalty", 1.0),
                logit_bias=logit_bias,
                seed=req.seed,
                stop=stop,
                min_tokens=req.min_tokens or 0,
                logprobs=bool(req.logprobs),
                top_logprobs=req.top_logprobs or 0,
            )
        except ParamError as exc:
            param = exc.param
            if param == "max_tokens" and req.max_completion_tokens is None:
                param = "max_tokens"
            else:
                param = _PARAM_NAMES.get(param, param)
            raise APIError(400, str(exc).replace(exc.param, param, 1), param=param, code="invalid_value") from exc

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

    def usage(self, num_prompt: int, num_completion: int) -> dict[str, int]:
        return {"prompt_tokens": num_prompt, "completion_tokens": num_completion,
                "total_tokens": num_prompt + num_completion}

    def completion(self, plan: ChatPlan, states: list[ChoiceState], num_prompt: int) -> dict[str, Any]:
        choices = []
        for index, state in enumerate(states):
            logprobs = {"content": self.logprobs_content(state.logprobs), "refusal": None} if plan.params.logprobs else None
            choices.append({
                "index": index,
                "message": {"role": "assistant", "content": state.text, "refusal": None},
                "logprobs": logprobs,
                "finish_reason": state.finish_reason,
            })
        return {
            "id": plan.request_id,
            "object": "chat.completion",
            "created": plan.created,
            "model": self.model_id,
            "choices": choices,
            "usage": self.usage(num_prompt, sum(s.num_tokens for s in states)),
            "service_tier": plan.service_tier,
            "system_fingerprint": self.system_fingerprint,
        }

    def chunk(self, plan: ChatPlan, choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> dict[str, Any]:
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
