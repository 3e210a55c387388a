import pytest
from pydantic import ValidationError

from hearth.server.chat.protocol import ChatCompletionRequest

SEED_FIELDS = {
    "frequency_penalty", "function_call", "functions", "logit_bias", "max_completion_tokens", "max_tokens",
    "messages", "model", "n", "parallel_tool_calls", "presence_penalty", "response_format", "seed",
    "service_tier", "stop", "stream", "stream_options", "temperature", "tool_choice", "tools",
    "top_logprobs", "top_p", "user", "logprobs",
}


def base(**extra):
    return {"model": "m", "messages": [{"role": "user", "content": "hi"}], **extra}


def test_schema_names_every_field_of_the_seed_request():
    assert SEED_FIELDS <= set(ChatCompletionRequest.model_fields)


def test_every_optional_field_accepts_explicit_null():
    nulls = {name: None for name in SEED_FIELDS - {"messages", "model"}}
    request = ChatCompletionRequest.model_validate(base(**nulls))
    assert request.temperature is None and request.tools is None


def test_seed_example_request_validates():
    request = ChatCompletionRequest.model_validate({
        "frequency_penalty": 0, "logit_bias": {"1234567890": 0.5}, "max_completion_tokens": 4096,
        "messages": [{"content": "You are a helpful AI assistant", "role": "system"},
                     {"content": "Hello!", "role": "user"},
                     {"content": "I'm here to help.", "role": "assistant"}],
        "model": "meta-llama/Llama-3.3-70B-Instruct", "n": 1, "parallel_tool_calls": True, "presence_penalty": 0,
        "seed": 123, "service_tier": "auto", "stop": ["stop", "halt"], "temperature": 0.7, "top_logprobs": 1,
        "top_p": 1, "user": "user-1234",
        "tools": [{"type": "function", "function": {"name": "get_current_weather", "parameters": {"type": "object"}}}],
        "functions": [{"name": "get_current_weather", "parameters": {"type": "object"}}],
    })
    assert request.stop == ["stop", "halt"] and request.tools[0].function.name == "get_current_weather"


def test_content_as_list_of_text_parts():
    request = ChatCompletionRequest.model_validate(base(messages=[{"role": "user", "content": [{"type": "text", "text": "a"}]}]))
    assert request.messages[0].content[0].text == "a"


@pytest.mark.parametrize("bad", [
    {"messages": []},
    {"messages": [{"role": "wizard", "content": "x"}]},
    {"temperature": "hot"},
    {"unknown_field": 1},
    {"service_tier": "gold"},
    {"response_format": {"type": "yaml"}},
])
def test_schema_violations_raise(bad):
    with pytest.raises(ValidationError):
        ChatCompletionRequest.model_validate(base(**bad))
