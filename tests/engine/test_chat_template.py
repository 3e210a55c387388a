"""hearth's chat template rendering (a GGUF's tokenizer, without transformers) against transformers' own
render_jinja_template on the same template, messages and variables: the same text, the same errors."""

from __future__ import annotations

import jinja2
import pytest

from hearth.engine.chat_template import ChatTemplate

CHATML = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
          "{{ '<|im_start|>system\\nYou are helpful<|im_end|>\\n' }}{% endif %}"
          "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
# Llama 3.1's shape: bos from the variables, tools as JSON, a namespace, whitespace control, loop controls.
TOOLS = """{{- bos_token }}
{%- set ns = namespace(system='') %}
{%- if messages[0]['role'] == 'system' %}{%- set ns.system = messages[0]['content'] %}{%- endif %}
<|start_header_id|>system<|end_header_id|>

{{ ns.system }}
{%- if tools is not none %}
Tools:
{%- for t in tools %}
{{ t | tojson(indent=2) }}
{%- endfor %}
{%- endif %}<|eot_id|>
{%- for message in messages %}
    {%- if message['role'] == 'system' %}{% continue %}{% endif %}
    {%- if message.tool_calls is defined %}
<|start_header_id|>assistant<|end_header_id|>

{%- for call in message.tool_calls %}{{ call.function | tojson }}{% endfor %}<|eot_id|>
    {%- else %}
<|start_header_id|>{{ message['role'] }}<|end_header_id|>

{{ message['content'] | trim }}<|eot_id|>
    {%- endif %}
    {%- if loop.index > 8 %}{% break %}{% endif %}
{%- endfor %}
{%- if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>

{% endif %}"""
# Templates that read reasoning under its names, mark the assistant's tokens, and use dict().
REASONING = ("{% for m in messages %}{% generation %}[{{ m.role }}]{% if m.reasoning_content is defined %}"
             "<think>{{ m.reasoning_content }}|{{ m.thinking }}</think>{% endif %}{{ m.content }}"
             "{% endgeneration %}{% endfor %}{{ dict(a=1) | tojson }}{{ 'é<>&' | tojson }}")
MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "  What's the weather in Paris?  "},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\": \"Paris\"}"}}]},
    {"role": "tool", "content": "21 C", "tool_call_id": "call_1"},
    {"role": "assistant", "content": "Sunny, 21 °C.", "reasoning_content": "The tool said 21."},
    {"role": "user", "content": "Thanks <|eot_id|> émoji 🎉"},
]
TOOL_SCHEMAS = [{"type": "function", "function": {"name": "weather", "description": "Weather now", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
SPECIAL = {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}


def theirs(template: str, messages, **kwargs) -> str:
    from transformers.utils.chat_template_utils import _normalize_chat_messages, render_jinja_template

    rendered, _ = render_jinja_template([_normalize_chat_messages(messages)], chat_template=template, **kwargs)
    return rendered[0]


@pytest.mark.parametrize("template", [CHATML, TOOLS, REASONING], ids=["chatml", "tools", "reasoning"])
@pytest.mark.parametrize("add_generation_prompt", [True, False])
@pytest.mark.parametrize("with_tools", [True, False])
def test_the_text_is_transformers_own(template, add_generation_prompt, with_tools):
    messages = MESSAGES if template != CHATML else [m for m in MESSAGES if m.get("content") is not None]
    tools = TOOL_SCHEMAS if with_tools else None
    ours = ChatTemplate(template).render(messages, tools=tools, add_generation_prompt=add_generation_prompt,
                                         **SPECIAL)
    assert ours == theirs(template, messages, tools=tools, add_generation_prompt=add_generation_prompt, **SPECIAL)
    assert ours  # every template writes something for these messages


def test_none_content_is_dropped_as_transformers_drops_it():
    """An assistant turn of tool calls only (content None) reads as a missing key, not the text 'None'."""
    template = "{% for m in messages %}{{ m.role }}:{{ m.content if m.content is defined else '-' }};{% endfor %}"
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": None}]
    assert ChatTemplate(template).render(messages) == "user:hi;assistant:-;" == theirs(template, messages)


def test_the_caller_messages_are_not_changed():
    messages = [{"role": "assistant", "content": "x", "reasoning_content": "r", "name": None}]
    ChatTemplate(REASONING).render(messages)
    assert messages == [{"role": "assistant", "content": "x", "reasoning_content": "r", "name": None}]


def test_raise_exception_and_the_sandbox_refuse_as_transformers_does():
    refusing = "{% if messages[0]['role'] != 'user' %}{{ raise_exception('first must be user') }}{% endif %}ok"
    with pytest.raises(jinja2.exceptions.TemplateError, match="first must be user"):
        ChatTemplate(refusing).render([{"role": "system", "content": "s"}])
    with pytest.raises(jinja2.exceptions.TemplateError, match="first must be user"):
        theirs(refusing, [{"role": "system", "content": "s"}])
    escaping = "{{ messages.__class__.__mro__ }}"
    with pytest.raises(jinja2.exceptions.SecurityError):
        ChatTemplate(escaping).render([{"role": "user", "content": "s"}])
    underscore = "{% set ns = namespace(_x=1) %}{{ ns._x }}"
    with pytest.raises(jinja2.exceptions.SecurityError):
        ChatTemplate(underscore).render([])
    with pytest.raises(jinja2.exceptions.SecurityError):
        theirs(underscore, [])


def test_strftime_now_renders_today():
    from datetime import date

    assert ChatTemplate("{{ strftime_now('%Y-%m-%d') }}").render([]) == date.today().isoformat()
