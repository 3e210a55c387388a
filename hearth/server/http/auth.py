"""API keys: where they come from (flags, HEARTH_API_KEY, a file) and the Bearer check on /v1/*."""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from pathlib import Path

from starlette.types import ASGIApp, Receive, Scope, Send

from hearth.server.errors import APIError

ENV_VAR = "HEARTH_API_KEY"


def load_api_keys(keys: Iterable[str] = (), env: dict[str, str] | None = None, key_file: str | None = None
                  ) -> tuple[str, ...]:
    """Keys from --api-key flags, the environment and --api-key-file (one a line; blank lines and lines
    starting with '#' skipped), without duplicates, in that order."""
    found = [k.strip() for k in keys]
    if env is not None and env.get(ENV_VAR, "").strip():
        found.append(env[ENV_VAR].strip())
    if key_file is not None:
        lines = Path(key_file).read_text().splitlines()
        found.extend(s for s in (line.strip() for line in lines) if s and not s.startswith("#"))
    return tuple(dict.fromkeys(found))


class KeyChecker:
    def __init__(self, keys: tuple[str, ...]) -> None:
        self._keys = [k.encode() for k in keys]

    @property
    def is_enabled(self) -> bool:
        return bool(self._keys)

    def is_valid(self, authorization: bytes | None) -> bool:
        if not self._keys:
            return True
        scheme, _, token = (authorization or b"").partition(b" ")
        token = token.strip()
        # Every key is compared (no early exit), each in constant time, so timing tells nothing of them.
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(token, key)
        return matched and scheme.lower() == b"bearer"


class AuthMiddleware:
    """401 in OpenAI's shape for /v1/* (and /metrics when asked) without a valid Bearer key."""

    def __init__(self, app: ASGIApp, checker: KeyChecker, protect_metrics: bool = False) -> None:
        self.app = app
        self.checker = checker
        self.protect_metrics = protect_metrics

    def _is_protected(self, path: str) -> bool:
        return path.startswith("/v1/") or path == "/v1" or (self.protect_metrics and path == "/metrics")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.checker.is_enabled or not self._is_protected(scope["path"]):
            await self.app(scope, receive, send)
            return
        authorization = dict(scope["headers"]).get(b"authorization")
        if self.checker.is_valid(authorization):
            await self.app(scope, receive, send)
            return
        message = ("You didn't provide an API key. You need to provide your API key in an Authorization header "
                   "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)." if not authorization
                   else "Incorrect API key provided.")
        response = APIError(401, message, code="invalid_api_key").response()
        response.headers["WWW-Authenticate"] = "Bearer"
        await response(scope, receive, send)
