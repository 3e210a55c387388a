"""Tool-call markup never reaches `content`: complete calls become tool_calls, the rest is dropped."""

from __future__ import annotations

import json

import pytest

from hearth.server.chat.tool_calls import StreamingToolParser, parse_tool_calls

NAMES = {"get_weather"}
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]


def streamed(text: str, call_format: str = "hermes", piece: int = 1) -> tuple[str, list]:
    parser = StreamingToolParser(call_format, NAMES)
    content, calls = "", []
    pieces = [text[i:i + piece] for i in range(0, len(text), piece)] or [""]
    for index, part in enumerate(pieces):
        out, found = parser.feed(part, is_final=index == len(pieces) - 1)
        content += out
        calls += found
    return content, calls


@pytest.mark.parametrize("text, content", [
    (CALL + "\n" + CALL[:40], None),                         # a second call cut by max_tokens
    ("Checking." + "\n" + CALL[:12], "Checking."),            # cut right after the opening tag
    ("Checking.\n<tool_", "Checking."),                       # cut inside the opening tag
    ("Checking. " + CALL.replace("get_weather", "nope"), "Checking."),  # a call of no known function
    ("Just text, 1 < 2", "Just text, 1 < 2"),
])
def test_call_markup_never_reaches_content(text, content):
    parsed_content, calls = parse_tool_calls(text, "hermes", NAMES)
    assert parsed_content == content
    for piece in (1, 3, 7, len(text)):
        streamed_content, streamed_calls = streamed(text, piece=piece)
        assert streamed_content == (content or "")
        assert [c.name for c in streamed_calls] == [c.name for c in calls]


def test_llama3_json_partial_call_is_dropped():
    whole = '{"name": "get_weather", "parameters": {"city": "Paris"}}'
    content, calls = parse_tool_calls(whole + "; " + whole[:20], "llama3_json", NAMES)
    assert content is None and [c.name for c in calls] == ["get_weather"]
    assert parse_tool_calls(whole[:25], "llama3_json", NAMES) == (None, [])
    assert parse_tool_calls('{"na', "llama3_json", NAMES) == (None, [])
    # JSON that is no call stays content.
    assert parse_tool_calls('{"answer": 4', "llama3_json", NAMES) == ('{"answer": 4', [])
    assert streamed(whole + "; " + whole[:20], "llama3_json", piece=5)[0] == ""


def test_required_tool_call_cut_by_max_tokens_leaves_no_markup(app_client):
    # With a 64-token budget the default model completes one call and is cut inside a second (issue 10).
    body = {"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
            "tools": TOOLS, "tool_choice": "required", "max_completion_tokens": 64, "temperature": 0}
    answer = app_client.post("/v1/chat/completions", json=body).json()["choices"][0]
    assert answer["finish_reason"] == "length"
    assert answer["message"]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert answer["message"]["content"] is None
    events = [json.loads(line[6:]) for line in app_client.post("/v1/chat/completions", json=dict(body, stream=True))
              .text.splitlines() if line.startswith("data: {")]
    content = "".join(c["delta"].get("content") or "" for e in events for c in e["choices"])
    assert content == ""
    assert sum(len(c["delta"].get("tool_calls", [])) for e in events for c in e["choices"]) == 1


TAG_IN_STRING = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris </tool_call> Texas"}}\n</tool_call>'


@pytest.mark.parametrize("text, cities, content", [
    (TAG_IN_STRING, ["Paris </tool_call> Texas"], None),  # the closing tag inside a string is text
    ("Sure. " + TAG_IN_STRING + " Done.", ["Paris </tool_call> Texas"], "Sure.  Done."),
    (TAG_IN_STRING[:70], [], None),  # cut inside the string, after the tag: dropped, never content
    ('<tool_call>\n{"name": "get_weather", "arguments": {"city": "a\\" } </tool_call>"}}\n</tool_call>',
     ['a" } </tool_call>'], None),  # escaped quotes and braces inside the string
])
def test_a_closing_tag_inside_the_json_is_text_and_a_cut_call_is_never_content(text, cities, content):
    parsed_content, calls = parse_tool_calls(text, "hermes", NAMES)
    assert parsed_content == content
    assert [json.loads(c.arguments)["city"] for c in calls] == cities
    for piece in (1, 4, len(text)):
        streamed_content, streamed_calls = streamed(text, piece=piece)
        assert streamed_content == (content or "")
        assert [json.loads(c.arguments)["city"] for c in streamed_calls] == cities
