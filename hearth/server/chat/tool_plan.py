"""Which functions a request offers and how the model may call them: tools/tool_choice/parallel_tool_calls,
or the deprecated functions/function_call mapped onto them; and the assistant message their calls make."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hearth.server.chat.protocol import ChatCompletionRequest
from hearth.server.chat.tool_calls import ToolCall
from hearth.server.errors import APIError


@dataclass(frozen=True)
class ToolPlan:
    """The functions offered and how the model may call them (tools, or the deprecated functions)."""

    functions: list[dict[str, Any]]
    # "none", "auto", "required", or the name of the one function to call.
    choice: str
    is_parallel: bool
    call_format: str
    is_legacy_functions: bool

    @property
    def names(self) -> set[str]:
        return {f["name"] for f in self.functions}

    @property
    def is_forced(self) -> bool:
        return self.choice not in ("none", "auto")



def tool_plan(req: ChatCompletionRequest, call_format: str) -> ToolPlan | None:
    """tools/tool_choice/parallel_tool_calls, or the deprecated functions/function_call mapped onto them."""
    if req.tools is not None and req.functions is not None:
        raise APIError(400, "use tools or the deprecated functions, not both", param="functions")
    is_legacy = req.functions is not None
    if req.tools is None and req.functions is None:
        for name in ("tool_choice", "parallel_tool_calls", "function_call"):
            if getattr(req, name) is not None:
                needed = "functions" if name == "function_call" else "tools"
                raise APIError(400, f"{name} is only allowed when {needed} are specified", param=name)
        return None
    if is_legacy:
        if req.tool_choice is not None or req.parallel_tool_calls is not None:
            param = "tool_choice" if req.tool_choice is not None else "parallel_tool_calls"
            raise APIError(400, f"{param} goes with tools, not with the deprecated functions", param=param)
        definitions = req.functions
        raw_choice = req.function_call
        param = "function_call"
    else:
        if req.function_call is not None:
            raise APIError(400, "function_call goes with the deprecated functions, not tools",
                           param="function_call")
        definitions = [t.function for t in req.tools]
        raw_choice = req.tool_choice.function if req.tool_choice is not None and not isinstance(
            req.tool_choice, str) else req.tool_choice
        param = "tool_choice"
    if not definitions:
        raise APIError(400, f"{'functions' if is_legacy else 'tools'} must not be empty",
                       param="functions" if is_legacy else "tools")
    functions = [d.model_dump(exclude_none=True, exclude={"strict"}) for d in definitions]
    names = [f["name"] for f in functions]
    if len(set(names)) != len(names):
        raise APIError(400, "function names must be unique", param="functions" if is_legacy else "tools")
    if raw_choice is None:
        choice = "auto"
    elif isinstance(raw_choice, str):
        choice = raw_choice
    else:
        choice = raw_choice.name
        if choice not in names:
            raise APIError(400, f"{param} names the function '{choice}', which is not among the ones given",
                           param=param)
    return ToolPlan(functions=functions, choice=choice, is_parallel=req.parallel_tool_calls is not False and not is_legacy,
                    call_format=call_format, is_legacy_functions=is_legacy)


def tool_message(tools: ToolPlan, content: str | None, calls: list[ToolCall], finish_reason: str | None
                 ) -> tuple[dict[str, Any], str | None]:
    """The assistant message and finish_reason for output that may hold tool calls."""
    if not tools.is_parallel:
        calls = calls[:1]
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
    if not calls:
        return message, finish_reason
    if finish_reason == "stop":
        finish_reason = "function_call" if tools.is_legacy_functions else "tool_calls"
    if tools.is_legacy_functions:
        message["function_call"] = {"name": calls[0].name, "arguments": calls[0].arguments}
    else:
        message["tool_calls"] = [c.openai() for c in calls]
    return message, finish_reason
