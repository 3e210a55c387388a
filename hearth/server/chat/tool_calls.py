"""Tool calls in model output: the prompt that offers tools, and parsers for the two call formats.

hermes (Hermes, Qwen, SmolLM):  <tool_call>
                                {"name": "get_weather", "arguments": {"city": "Paris"}}
                                </tool_call>
llama3_json (Llama 3.x):        {"name": "get_weather", "parameters": {"city": "Paris"}}   (several: "; ")

A model whose chat template takes no `tools` gets them in a system message, in the hermes format
(TOOLS_PROMPT below); templates that take `tools` render them themselves.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

TOOLS_PROMPT = (
    "You are a function calling AI model. You are provided with function signatures within <tools></tools> "
    "XML tags. You may call one or more functions to assist with the user query. Don't make assumptions "
    "about what values to plug into functions. Here are the available tools: <tools>\n{tools}\n</tools>\n"
    "For each function call return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags as follows:\n<tool_call>\n"
    '{{"name": <function-name>, "arguments": <args-json-object>}}\n</tool_call>'
)
_HERMES_OPEN = "<tool_call>"
_HERMES_CLOSE = "</tool_call>"
_PYTHON_TAG = "<|python_tag|>"
# A trailing piece of an opening tag this long or longer ("<t", "<to", ...) is taken for a cut call.
_MIN_PARTIAL_OPEN = 2


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: str  # a JSON text
    id: str = field(default_factory=lambda: f"call_{uuid.uuid4().hex[:24]}")

    def openai(self) -> dict[str, Any]:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


def tools_system_prompt(functions: list[dict[str, Any]]) -> str:
    lines = [json.dumps({"type": "function", "function": f}, ensure_ascii=False) for f in functions]
    return TOOLS_PROMPT.format(tools="\n".join(lines))


def render_call(name: str, arguments: str, call_format: str) -> str:
    """A past call as the model would have written it (for templates that cannot render tool_calls)."""
    try:
        args = json.loads(arguments)
    except ValueError:
        args = arguments
    if call_format == "llama3_json":
        return json.dumps({"name": name, "parameters": args}, ensure_ascii=False)
    return "<tool_call>\n" + json.dumps({"name": name, "arguments": args}, ensure_ascii=False) + "\n</tool_call>"


def _call_from(obj: Any, names: set[str]) -> ToolCall | None:
    if not isinstance(obj, dict) or obj.get("name") not in names:
        return None
    args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except ValueError:
            return None
    if not isinstance(args, dict):
        return None
    return ToolCall(name=obj["name"], arguments=json.dumps(args, ensure_ascii=False))


def parse_tool_calls(text: str, call_format: str, names: set[str]) -> tuple[str | None, list[ToolCall]]:
    """(content, calls): calls found in `text`; content is what is left, stripped of surrounding whitespace
    (as the streamed content is), None when nothing but calls remains. Call markup never stays content:
    a call that does not parse as one of a known function, or one cut off by max_tokens, is dropped."""
    if call_format == "llama3_json":
        return _parse_llama3_json(text, names)
    calls: list[ToolCall] = []
    kept: list[str] = []
    position = 0
    while (block := _hermes_block(text, position, names)) is not None:
        start, end, call = block
        kept.append(text[position:start])
        if end is None:  # opened, never closed (cut off by max_tokens): dropped
            position = len(text)
            break
        if call is not None:
            calls.append(call)
        position = end
    kept.append(_without_cut_call(text[position:]))
    content = "".join(kept).strip()
    return (content or None), calls


def _json_object_end(text: str, start: int) -> int | None:
    """The end of the JSON object opening at text[start] ('{'), by braces outside strings (escapes kept), or
    None when the text ends first."""
    depth, in_string, escaped = 0, False, False
    for i in range(start, len(text)):
        c = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i + 1
    return None


def _hermes_block(text: str, position: int, names: set[str]) -> tuple[int, int | None, ToolCall | None] | None:
    """The next `<tool_call>` block from `position`: (start, end or None while it is not closed, its call or
    None). A body that opens a JSON object is read as JSON, so a closing tag inside one of its strings is
    just text (the constrained output of a required call can hold one); any other body ends at the tag."""
    start = text.find(_HERMES_OPEN, position)
    if start < 0:
        return None
    body = start + len(_HERMES_OPEN)
    while body < len(text) and text[body].isspace():
        body += 1
    search_from, call = body, None
    if body < len(text) and text[body] == "{":
        end = _json_object_end(text, body)
        if end is None:
            return start, None, None
        after = end
        while after < len(text) and text[after].isspace():
            after += 1
        if text.startswith(_HERMES_CLOSE, after):
            try:
                call = _call_from(json.loads(text[body:end]), names)
            except ValueError:
                call = None
            return start, after + len(_HERMES_CLOSE), call
        search_from = end  # something after the object: no call, and the block ends at the next tag
    close = text.find(_HERMES_CLOSE, search_from)
    return start, (close + len(_HERMES_CLOSE) if close >= 0 else None), None


def _partial_open_length(text: str) -> int:
    """Length of the longest proper prefix of the opening tag that `text` ends with."""
    return max((n for n in range(1, len(_HERMES_OPEN)) if text.endswith(_HERMES_OPEN[:n])), default=0)


def _without_cut_call(tail: str) -> str:
    """`tail` (text after the last complete call) without a call that was opened but never closed."""
    start = tail.find(_HERMES_OPEN)
    if start >= 0:
        return tail[:start]
    cut = _partial_open_length(tail)
    return tail[:len(tail) - cut] if cut >= _MIN_PARTIAL_OPEN else tail


def _looks_like_call_start(body: str) -> bool:
    """Whether llama3_json output that does not parse began a call: '{' then (a prefix of) '"name"'."""
    if body.startswith(_PYTHON_TAG):
        return True
    if not body.startswith("{"):
        return False
    rest = body[1:].lstrip()
    return rest.startswith('"name"') or '"name"'.startswith(rest)


def _parse_llama3_json(text: str, names: set[str]) -> tuple[str | None, list[ToolCall]]:
    body = text.strip().removeprefix(_PYTHON_TAG).strip()
    decoder = json.JSONDecoder()
    calls = []
    position = 0
    while position < len(body):
        try:
            obj, end = decoder.raw_decode(body, position)
        except ValueError:
            # A call cut off by max_tokens (after whole calls, or from the start) is dropped.
            if calls or _looks_like_call_start(text.strip()):
                return None, calls
            return text.strip() or None, []
        call = _call_from(obj, names)
        if call is None:
            return text.strip() or None, []
        calls.append(call)
        position = end
        while position < len(body) and body[position] in " \t\n;":
            position += 1
    return (None, calls) if calls else (text.strip() or None, [])


class StreamingToolParser:
    """Splits streamed text into content deltas and complete tool calls.

    Content is released as it comes, except text that may be the start of a call: from `<tool_call>` (or
    a partial prefix of it at the end) for hermes, and the whole output when it opens with `{` for
    llama3_json. Held text becomes calls when they complete; held markup that never makes a call (cut
    off, or naming no known function) is dropped, so the content matches parse_tool_calls'.
    """

    def __init__(self, call_format: str, names: set[str]) -> None:
        self.call_format = call_format
        self.names = names
        self._held = ""
        self._has_content = False
        # Whitespace is released only once more content follows: content matches the stripped text of
        # a non-streamed response.
        self._pending_space = ""
        self._has_released = False
        self.calls: list[ToolCall] = []

    def _trim(self, text: str, is_final: bool) -> str:
        text = self._pending_space + text
        body = text.rstrip()
        self._pending_space = "" if is_final else text[len(body):]
        if not self._has_released:
            body = body.lstrip()
        if body:
            self._has_released = True
        return body

    def _split_hermes(self, is_final: bool) -> tuple[str, list[ToolCall]]:
        out, calls = [], []
        while True:
            start = self._held.find(_HERMES_OPEN)
            if start < 0:
                if is_final:
                    out.append(_without_cut_call(self._held))
                    self._held = ""
                    break
                keep = _partial_open_length(self._held)
                out.append(self._held[:len(self._held) - keep])
                self._held = self._held[len(self._held) - keep:]
                break
            out.append(self._held[:start])
            self._held = self._held[start:]
            _, end, call = _hermes_block(self._held, 0, self.names)
            if end is None:
                if is_final:  # a call cut off by max_tokens: dropped, as in parse_tool_calls
                    self._held = ""
                break
            # A block that is no call of a known function is dropped, as in parse_tool_calls.
            if call is not None:
                calls.append(call)
            self._held = self._held[end:]
        return "".join(out), calls

    def feed(self, text: str, is_final: bool = False) -> tuple[str, list[ToolCall]]:
        """Content to release now and tool calls completed by `text`."""
        content, calls = self._feed(text, is_final)
        return self._trim(content, is_final), calls

    def _feed(self, text: str, is_final: bool) -> tuple[str, list[ToolCall]]:
        self._held += text
        if self.call_format == "llama3_json":
            probe = self._held.lstrip()
            if self._has_content or (probe and not probe.startswith(("{", _PYTHON_TAG[:len(probe)]))):
                self._has_content = True
                out, self._held = self._held, ""
                return out, []
            if not is_final:
                return "", []
            content, calls = parse_tool_calls(self._held, "llama3_json", self.names)
            self._held = ""
            self.calls.extend(calls)
            return (content or "") if not calls else "", calls
        out, calls = self._split_hermes(is_final)
        self.calls.extend(calls)
        return out, calls
