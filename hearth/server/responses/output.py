"""A chat plan's outputs as a Responses answer: output items (a message's output_text, function calls)
and, as they grow, the stream's events. One path for both: a non-streamed request runs the same events
and answers the final response object."""

from __future__ import annotations

import time
import uuid
from typing import Any

from hearth.engine.output.outputs import RequestOutput
from hearth.server.chat.adapter import ChatAdapter, ChatPlan
from hearth.server.chat.tool_calls import StreamingToolParser, ToolCall
from hearth.server.errors import APIError
from hearth.server.responses.protocol import FunctionTool, ResponseRequest

Event = dict[str, Any]


def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


class ResponseOutput:
    def __init__(self, adapter: ChatAdapter, plan: ChatPlan, req: ResponseRequest) -> None:
        self.adapter = adapter
        self.plan = plan
        self.req = req
        self.id = _id("resp")
        self.parser = StreamingToolParser(plan.tools.call_format, plan.tools.names) if plan.parses_tool_calls else None
        self.items: list[dict[str, Any]] = []
        self.message: dict[str, Any] | None = None  # the message item being written
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None
        self._sequence = 0

    def _event(self, kind: str, **fields: Any) -> Event:
        event = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return event

    # ---- events -----------------------------------------------------------------------------------

    def start(self) -> list[Event]:
        response = self.response("in_progress")
        return [self._event("response.created", response=response),
                self._event("response.in_progress", response=response)]

    def add(self, output: RequestOutput) -> list[Event]:
        events: list[Event] = []
        for delta in output.choices:
            is_final = delta.finish_reason is not None
            text, calls = delta.text, []
            if self.parser is not None:
                text, calls = self.parser.feed(delta.text, is_final=is_final)
            logprobs = self.adapter.logprobs_content(delta.logprobs) if self.plan.params.logprobs else []
            if text:
                events += self._text(text, logprobs)
            for call in calls:
                if self.plan.tools.is_parallel or not self._calls():
                    events += self._call(call)
            if is_final:
                self.finish_reason = delta.finish_reason
        self.usage = {
            "input_tokens": output.num_prompt_tokens,
            "input_tokens_details": {"cached_tokens": output.num_cached_tokens},
            "output_tokens": output.num_completion_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": output.num_prompt_tokens + output.num_completion_tokens,
        }
        return events

    def finish(self) -> list[Event]:
        events = self._close_message()
        status = self.status
        kind = "response.completed" if status == "completed" else "response.incomplete"
        return events + [self._event(kind, response=self.response(status))]

    def error(self, error: APIError) -> Event:
        """The event that ends a failed response (its status kept for a non-streamed answer)."""
        return self._event("error", status=error.status, code=error.code, message=error.message, param=error.param)

    def _calls(self) -> list[dict[str, Any]]:
        return [item for item in self.items if item["type"] == "function_call"]

    def _text(self, text: str, logprobs: list[dict[str, Any]]) -> list[Event]:
        events = []
        if self.message is None:
            self.message = {"id": _id("msg"), "type": "message", "status": "in_progress", "role": "assistant",
                            "content": []}
            self.items.append(self.message)
            events.append(self._event("response.output_item.added", output_index=len(self.items) - 1,
                                      item={**self.message, "content": []}))
            self.message["content"].append({"type": "output_text", "text": "", "annotations": [], "logprobs": []})
            events.append(self._event("response.content_part.added", **self._where(),
                                      part={"type": "output_text", "text": "", "annotations": [], "logprobs": []}))
        part = self.message["content"][0]
        part["text"] += text
        part["logprobs"] += logprobs
        events.append(self._event("response.output_text.delta", **self._where(), delta=text, logprobs=logprobs))
        return events

    def _where(self) -> dict[str, Any]:
        return {"item_id": self.message["id"], "output_index": self.items.index(self.message), "content_index": 0}

    def _close_message(self) -> list[Event]:
        if self.message is None:
            return []
        part, where = self.message["content"][0], self._where()
        self.message["status"] = "incomplete" if self.finish_reason == "length" else "completed"
        events = [self._event("response.output_text.done", **where, text=part["text"], logprobs=part["logprobs"]),
                  self._event("response.content_part.done", **where, part=dict(part)),
                  self._event("response.output_item.done", output_index=where["output_index"], item=dict(self.message))]
        self.message = None
        return events

    def _call(self, call: ToolCall) -> list[Event]:
        events = self._close_message()
        item = {"id": _id("fc"), "type": "function_call", "status": "in_progress", "call_id": call.id,
                "name": call.name, "arguments": ""}
        self.items.append(item)
        index = len(self.items) - 1
        events.append(self._event("response.output_item.added", output_index=index, item=dict(item)))
        events.append(self._event("response.function_call_arguments.delta", item_id=item["id"], output_index=index,
                                  delta=call.arguments))
        item.update(arguments=call.arguments, status="completed")
        events.append(self._event("response.function_call_arguments.done", item_id=item["id"], output_index=index,
                                  name=call.name, arguments=call.arguments))
        events.append(self._event("response.output_item.done", output_index=index, item=dict(item)))
        return events

    # ---- the response object ----------------------------------------------------------------------

    @property
    def status(self) -> str:
        return "incomplete" if self.finish_reason == "length" else "completed"

    def response(self, status: str) -> dict[str, Any]:
        req, params = self.req, self.plan.params
        fmt = req.text.format if req.text is not None and req.text.format is not None else None
        is_done = status != "in_progress"
        return {
            "id": self.id, "object": "response", "created_at": self.plan.created, "status": status,
            "completed_at": int(time.time()) if status == "completed" else None,
            "background": False, "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
            "instructions": req.instructions, "max_output_tokens": req.max_output_tokens,
            "max_tool_calls": req.max_tool_calls, "model": self.adapter.model_id,
            "output": [dict(item) for item in self.items] if is_done else [],
            "parallel_tool_calls": self.plan.tools.is_parallel if self.plan.tools is not None else req.parallel_tool_calls is not False,
            "previous_response_id": None, "reasoning": {"effort": None, "summary": None},
            "service_tier": self.plan.service_tier or "default", "store": False,
            "temperature": params.temperature, "top_p": params.top_p, "top_logprobs": params.top_logprobs,
            "text": {"format": fmt.model_dump(by_alias=True, exclude_none=True) if fmt is not None else {"type": "text"}},
            "tool_choice": _tool_choice(req), "tools": [_tool(t) for t in req.tools or []],
            "truncation": "disabled", "usage": self.usage if is_done else None, "user": req.user,
            "metadata": req.metadata or {},
        }


def _tool_choice(req: ResponseRequest) -> Any:
    choice = req.tool_choice
    if choice is None:
        return "auto"
    return choice if isinstance(choice, str) else choice.model_dump()


def _tool(tool: FunctionTool) -> dict[str, Any]:
    return {"type": "function", "name": tool.name, "description": tool.description,
            "parameters": tool.parameters, "strict": tool.strict}
