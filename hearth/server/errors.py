"""Errors in OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""

from __future__ import annotations

import collections.abc
import json
import types
import typing

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from hearth.server.chat.protocol import ChatCompletionRequest
from hearth.server.completions.protocol import CompletionRequest
from hearth.server.responses.protocol import ResponseRequest

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


def _location(loc: tuple, model: type = ChatCompletionRequest) -> str | None:
    """pydantic's error location as OpenAI names a parameter: `messages.0.content`. Its union-branch tags
    ('user' for a message's role, 'json_schema' for a response_format's type, 'str', 'list[...]') are not
    fields of the request, so they go: found by walking the request model along the location."""
    kept = []
    annotation = model
    for part in (p for p in loc if p != "body"):
        branches = _union_branches(annotation)
        if branches is not None and (str(part) in branches or _branch_name(part) in branches):
            annotation = branches.get(str(part), branches.get(_branch_name(part)))
            continue
        if isinstance(part, str) and part.startswith("function-"):  # a validator's wrapper, not a field
            continue
        kept.append(str(part))
        annotation = _field(annotation, part)
    return ".".join(kept) or None


def param_path(loc: tuple, model: type) -> str | None:
    """A pydantic error location within `model` as OpenAI names the parameter."""
    return _location(loc, model)


def _unwrap(annotation):
    """Annotated[X, ...] and X | None -> X (a union of several non-None types stays a union)."""
    while True:
        if typing.get_origin(annotation) is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
            continue
        if typing.get_origin(annotation) in (typing.Union, types.UnionType):
            members = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(members) == 1:
                annotation = members[0]
                continue
        return annotation


def _union_branches(annotation) -> dict | None:
    """A union's branches by the tag pydantic puts in a location: a discriminated union's Literal values
    (its members' `role` or `type`), else each member type's name ('str', 'list[...]')."""
    annotation = _unwrap(annotation)
    if typing.get_origin(annotation) not in (typing.Union, types.UnionType):
        return None
    branches = {}
    for member in typing.get_args(annotation):
        member = _unwrap(member)
        fields = getattr(member, "model_fields", {})
        for key in ("role", "type"):
            if key in fields and typing.get_origin(fields[key].annotation) is typing.Literal:
                branches.update({str(v): member for v in typing.get_args(fields[key].annotation)})
        origin = typing.get_origin(member) or member
        branches[getattr(origin, "__name__", str(origin))] = member  # 'str', 'list': pydantic writes 'list[...]'
    return branches


def _branch_name(part) -> str:
    """pydantic's tag for a plain union branch ('list[tagged-union[...]]') by its type's name ('list')."""
    return str(part).split("[", 1)[0]


def _field(annotation, part):
    """The annotation one step down `part` (a field name or a list index); None past what is known."""
    annotation = _unwrap(annotation)
    fields = getattr(annotation, "model_fields", None)
    if fields is not None:
        return fields[part].annotation if part in fields else None
    if typing.get_origin(annotation) in (list, tuple, collections.abc.Sequence) and isinstance(part, int):
        return typing.get_args(annotation)[0]
    if typing.get_origin(annotation) is dict:
        return typing.get_args(annotation)[1]
    return None


def request_model(path: str) -> type:
    """The request model of the route at `path` (chat's where no other API is served there)."""
    models = {"/v1/completions": CompletionRequest, "/v1/responses": ResponseRequest}
    return models.get(path.rstrip("/"), ChatCompletionRequest)


def validation_message(exc: RequestValidationError, model: type = ChatCompletionRequest) -> APIError:
    errors = exc.errors()
    first = errors[0] if errors else {"msg": "invalid request", "loc": ()}
    if first.get("type") == "json_invalid":
        return APIError(400, "We could not parse the JSON body of your request: " + str(first.get("msg")),
                        code="invalid_json")
    param = _location(tuple(first.get("loc", ())), model)
    if first.get("type") == "extra_forbidden":
        return APIError(400, f"Unrecognized request argument supplied: {param}", param=param,
                        code="unrecognized_argument")
    if param is None and first.get("input") is None:  # no body (or null): name the first field a body needs
        param = next(name for name, f in model.model_fields.items() if f.is_required())
        return APIError(400, f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter")
    if param is None:
        return APIError(400, "The request body must be a JSON object.", code="invalid_value")
    if first.get("type") == "missing":
        return APIError(400, f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter")
    detail = first.get("msg", "invalid value")
    return APIError(400, f"Invalid value for '{param}': {detail}", param=param, code="invalid_value")


async def handle_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    return validation_message(exc, request_model(request.url.path)).response()


async def handle_api_error(request: Request, exc: APIError) -> JSONResponse:
    return exc.response()


async def handle_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = "not_found" if exc.status_code == 404 else None
    return APIError(exc.status_code, str(exc.detail), code=code).response()


async def handle_unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    return APIError(500, f"internal server error: {type(exc).__name__}: {exc}").response()
