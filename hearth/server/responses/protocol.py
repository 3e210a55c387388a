"""Pydantic schema of a Responses request (POST /v1/responses), stateless.

Every field of OpenAI's ResponseCreateParams is named; unknown fields are rejected. Fields this server
cannot honour (stored or background responses, conversations, built-in tools, reasoning effort ...) are
typed loosely here and refused with a 400 naming them when set (responses/translate.py).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field

from hearth.server.chat.protocol import Int64, Strict


class Loose(Strict):
    """An object whose fields beyond those named are kept, for a 400 to name them."""

    model_config = ConfigDict(extra="allow")


# ---- input items ------------------------------------------------------------------------------------

class InputText(Strict):
    type: Literal["input_text", "output_text"]
    text: str
    annotations: list[Any] | None = None
    logprobs: list[Any] | None = None


class Refusal(Strict):
    type: Literal["refusal"]
    refusal: str


class OtherPart(Loose):
    """input_image, input_file, input_audio: refused, this model reads text."""

    type: Literal["input_image", "input_file", "input_audio"]


ContentPart = Annotated[InputText | Refusal | OtherPart, Field(discriminator="type")]


class MessageItem(Strict):
    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[ContentPart]
    id: str | None = None
    status: str | None = None
    phase: str | None = None


class FunctionCallItem(Strict):
    type: Literal["function_call"]
    call_id: str
    name: str
    arguments: str
    id: str | None = None
    status: str | None = None
    namespace: str | None = None


class FunctionCallOutputItem(Strict):
    type: Literal["function_call_output"]
    call_id: str
    output: str | list[ContentPart]
    id: str | None = None
    status: str | None = None


class OtherItem(Loose):
    """Items that need stored state or built-in tools (item_reference, reasoning, web_search_call, ...)."""

    type: str


InputItem = MessageItem | FunctionCallItem | FunctionCallOutputItem | OtherItem


# ---- tools and formats ------------------------------------------------------------------------------

class FunctionTool(Strict):
    type: Literal["function"]
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class BuiltinTool(Loose):
    """web_search, file_search, computer_use, code_interpreter, mcp, ...: refused, no built-in tools here."""

    type: str


class FunctionChoice(Strict):
    type: Literal["function"]
    name: str


class TextFormatText(Strict):
    type: Literal["text"]


class TextFormatJsonObject(Strict):
    type: Literal["json_object"]


class TextFormatJsonSchema(Strict):
    type: Literal["json_schema"]
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    schema_: dict[str, Any] = Field(alias="schema")
    description: str | None = None
    strict: bool | None = None

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


TextFormat = Annotated[TextFormatText | TextFormatJsonObject | TextFormatJsonSchema, Field(discriminator="type")]


class TextConfig(Strict):
    format: TextFormat | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


class Reasoning(Strict):
    effort: str | None = None
    summary: str | None = None
    generate_summary: str | None = None


class StreamOptions(Strict):
    include_obfuscation: bool | None = None


# ---- the request ------------------------------------------------------------------------------------

class ResponseRequest(Strict):
    model: str
    input: str | list[InputItem]
    instructions: str | None = None
    max_output_tokens: Int64 | None = None
    metadata: dict[str, str] | None = None
    parallel_tool_calls: bool | None = None
    service_tier: Literal["auto", "default", "flex", "scale", "priority"] | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    temperature: float | None = None
    text: TextConfig | None = None
    tool_choice: Literal["none", "auto", "required"] | FunctionChoice | dict[str, Any] | None = None
    tools: list[FunctionTool | BuiltinTool] | None = None
    top_logprobs: Int64 | None = None
    top_p: float | None = None
    user: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    include: list[str] | None = None
    truncation: Literal["auto", "disabled"] | None = None
    max_tool_calls: Int64 | None = None
    reasoning: Reasoning | None = None
    # Refused when set: they need state, tools or models this server does not have.
    background: bool | None = None
    store: bool | None = None
    previous_response_id: str | None = None
    conversation: str | dict[str, Any] | None = None
    prompt: dict[str, Any] | None = None
    prompt_cache_retention: Literal["in_memory", "24h"] | None = None
    prompt_cache_options: dict[str, Any] | None = None
    context_management: list[Any] | None = None
    moderation: dict[str, Any] | None = None
