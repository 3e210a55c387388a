"""The OpenAPI document as the server behaves, and /docs from Swagger UI assets shipped in a package.

FastAPI would promise 422 for bad input (the server answers 400) and no error responses: routes declare
their real responses with error_responses(), and 422 and its schemas are removed here. Swagger UI's
script and style come from the swagger-ui-bundle-v2 package, served under /docs/static, so /docs works
without network access; ReDoc (CDN only) is off.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from hearth.server.chat.responses import ChatCompletion, ChatCompletionChunk, ErrorResponse
from hearth.server.completions.protocol import Completion
from hearth.server.responses.schemas import ResponseObject, ResponseStreamEvent

DOCS_STATIC = "/docs/static"
_DESCRIPTIONS = {
    400: "Invalid request: malformed JSON, a schema violation or a value out of range (`param` names it)",
    401: "Missing or wrong API key (`invalid_api_key`), when the server was started with keys",
    404: "Unknown model (`model_not_found`) or route",
    413: "Request body over --max-request-bytes (`request_too_large`)",
    429: "Too many requests waiting (`rate_limit_exceeded`); retry after the Retry-After header's seconds",
    500: "A failure inside the engine; it fails this request only",
    503: "The server is shutting down (`server_shutting_down`) or its engine is not running",
}


def sse_event(*schemas: str) -> dict[str, Any]:
    """One server-sent event (the schema of an event stream describes each event, as Open API 3.2 has it):
    its data is one of `schemas`, an ErrorResponse when the request fails mid-stream, or [DONE]."""
    refs = [{"$ref": f"#/components/schemas/{name}"} for name in (*schemas, "ErrorResponse")]
    return {
        "type": "object",
        "required": ["data"],
        "properties": {
            "event": {"type": "string"},
            "data": {"anyOf": [
                {"const": "[DONE]"},
                {"type": "string", "contentMediaType": "application/json", "contentSchema": {"anyOf": refs}},
            ]},
        },
    }


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorResponse, "description": _DESCRIPTIONS[status]} for status in statuses}


def chat_responses() -> dict[int | str, dict[str, Any]]:
    ok = {
        "model": ChatCompletion,
        "description": "A chat.completion object; with `stream: true`, server-sent events whose data are "
                       "ChatCompletionChunk objects, then `data: [DONE]` (or an ErrorResponse event if the "
                       "request fails once streaming)",
        "content": {"text/event-stream": {"schema": sse_event("ChatCompletionChunk")}},
    }
    return {200: ok, **error_responses(400, 401, 404, 413, 429, 500, 503)}


def completion_responses() -> dict[int | str, dict[str, Any]]:
    ok = {
        "model": Completion,
        "description": "A text_completion object; with `stream: true`, server-sent events whose data are "
                       "text_completion objects holding what each choice added, then `data: [DONE]` (or an "
                       "ErrorResponse event if the request fails once streaming)",
        "content": {"text/event-stream": {"schema": sse_event("Completion")}},
    }
    return {200: ok, **error_responses(400, 401, 404, 413, 429, 500, 503)}


def response_responses() -> dict[int | str, dict[str, Any]]:
    ok = {
        "model": ResponseObject,
        "description": "A response object; with `stream: true`, server-sent events (`event:` the type, `data:` a "
                       "ResponseStreamEvent) from response.created to response.completed or response.incomplete, "
                       "or an error event if the request fails once streaming",
        "content": {"text/event-stream": {"schema": sse_event("ResponseStreamEvent")}},
    }
    return {200: ok, **error_responses(400, 401, 404, 413, 429, 500, 503)}


def install_openapi(app: FastAPI, has_keys: bool) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        schemas = schema.setdefault("components", {}).setdefault("schemas", {})
        for item in schema["paths"].values():
            for operation in item.values():
                operation.get("responses", {}).pop("422", None)
        for name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(name, None)
        for model in (ChatCompletionChunk, ResponseStreamEvent):
            chunk = model.model_json_schema(ref_template="#/components/schemas/{model}", mode="serialization")
            for name, definition in chunk.pop("$defs", {}).items():
                schemas.setdefault(name, definition)
            schemas[model.__name__] = chunk
        if has_keys:
            schema["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
            for path, item in schema["paths"].items():
                if path.startswith("/v1/"):
                    for operation in item.values():
                        operation["security"] = [{"bearer": []}]
        app.openapi_schema = schema
        return schema

    app.openapi = openapi


def install_docs(app: FastAPI) -> None:
    from swagger_ui_bundle import swagger_ui_path

    app.mount(DOCS_STATIC, StaticFiles(directory=str(swagger_ui_path)), name="docs-static")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=app.openapi_url, title=f"{app.title} - API",
                                   swagger_js_url=f"{DOCS_STATIC}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{DOCS_STATIC}/swagger-ui.css",
                                   swagger_favicon_url=f"{DOCS_STATIC}/favicon-32x32.png")
