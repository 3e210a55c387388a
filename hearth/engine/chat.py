"""Render chat messages into prompt token ids through the tokenizer's chat template."""

from __future__ import annotations

from typing import Any


class ChatTemplateError(ValueError):
    """The messages cannot be rendered by this model's chat template."""


def render_chat(
    tokenizer, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
) -> list[int]:
    """Token ids of `messages` followed by the assistant's generation prompt.

    messages are plain dicts with string content (None for an assistant turn that only calls tools).
    """
    if not getattr(tokenizer, "chat_template", None):
        raise ChatTemplateError("this model has no chat template")
    try:
        rendered = tokenizer.apply_chat_template(
            messages, tools=tools, add_generation_prompt=True, tokenize=False
        )
    except Exception as exc:  # jinja raises TemplateError and plain exceptions alike
        raise ChatTemplateError(f"the chat template could not render these messages: {exc}") from exc
    # The template writes every special token itself.
    return tokenizer.encode(rendered, add_special_tokens=False)
