"""Errors in OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""

from __future__ import annotations

import json

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from hearth.server.chat.protocol import ChatCompletionRequest

_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 404: "invalid_request_error",
          405: "invalid_request_error", 413: "invalid_request_error", 429: "requests", 500: "server_error",
          503: "server_error"}


class APIError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 type: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.headers = headers
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type or _TYPES.get(status, "invalid_request_error")

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)

    def sse(self) -> str:
        return f"data: {json.dumps(self.body())}\n\n"


def _location(loc: tuple) -> str | None:
    parts = [str(p) for p in loc if p != "body"]
    # Drop pydantic's union-branch tags (e.g. 'user', 'str', 'list[...]') after indexes.
    kept = []
    for part in parts:
        if kept and (part in {"str", "int", "float", "bool", "none"} or "[" in part or part.startswith("function-")):
            continue
        kept.append(part)
    return ".".join(kept) or None


def validation_message(exc: RequestValidationError) -> APIError:
    errors = exc.errors()
    first = errors[0] if errors else {"msg": "invalid request", "loc": ()}
    if first.get("type") == "json_invalid":
        return APIError(400, "We could not parse the JSON body of your request: " + str(first.get("msg")),
                        code="invalid_json")
    param = _location(tuple(first.get("loc", ())))
    if first.get("type") == "extra_forbidden":
        return APIError(400, f"Unrecognized request argument supplied: {param}", param=param,
                        code="unrecognized_argument")
    if param is None and first.get("input") is None:  # no body (or null): name the first field a body needs
        param = next(name for name, f in ChatCompletionRequest.model_fields.items() if f.is_required())
        return APIError(400, f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter")
    if param is None:
        return APIError(400, "The request body must be a JSON object.", code="invalid_value")
    if first.get("type") == "missing":
        return APIError(400, f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter")
    detail = first.get("msg", "invalid value")
    return APIError(400, f"Invalid value for '{param}': {detail}", param=param, code="invalid_value")


async def handle_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    return validation_message(exc).response()


async def handle_api_error(request: Request, exc: APIError) -> JSONResponse:
    return exc.response()


async def handle_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = "not_found" if exc.status_code == 404 else None
    return APIError(exc.status_code, str(exc.detail), code=code).response()


async def handle_unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    return APIError(500, f"internal server error: {type(exc).__name__}: {exc}").response()
