"""Graceful shutdown: on SIGTERM or SIGINT new requests get 503, in-flight ones may finish within the
shutdown timeout, and those still running then end with an error (a 503, or an error chunk when
streaming). A second signal ends the wait at once."""

from __future__ import annotations

import logging
import signal
import time

from starlette.types import ASGIApp, Receive, Scope, Send

from hearth.server.async_engine import AsyncEngine, EngineDeadError
from hearth.server.errors import APIError

logger = logging.getLogger("hearth.server")

# Paths that keep answering while draining: probes see the draining state, scrapers the last figures.
_OPEN_WHILE_DRAINING = ("/health", "/metrics")


def shutting_down_error() -> APIError:
    return APIError(503, "The server is shutting down; retry on another instance or after it restarts.",
                    code="server_shutting_down", headers={"Connection": "close"})


class Shutdown:
    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._deadline: float | None = None

    @property
    def is_draining(self) -> bool:
        return self._deadline is not None

    @property
    def is_expired(self) -> bool:
        return self._deadline is not None and time.monotonic() >= self._deadline

    def begin(self) -> None:
        if self._deadline is None:
            self._deadline = time.monotonic() + self.timeout_s
        else:  # asked twice: stop waiting
            self._deadline = time.monotonic()

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT begin the drain (main thread only, as Python's signal module requires)."""
        def handle(signum, frame) -> None:
            again = self.is_draining
            self.begin()
            logger.warning("%s: %s", signal.Signals(signum).name,
                           "ending in-flight requests now" if again else
                           f"draining (new requests get 503; in-flight ones have {self.timeout_s:g} s to finish)")

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)

    def engine_should_stop(self, async_engine: AsyncEngine) -> bool:
        """For the engine loop: once draining, stop when idle, or end what is left at the deadline."""
        if not self.is_draining:
            return False
        if async_engine.is_idle:
            return True
        if self.is_expired:
            left = async_engine.abort_all(EngineDeadError(shutting_down_error().message))
            logger.warning("shutdown timeout: ended %d unfinished requests", left)
            return True
        return False


class ShutdownMiddleware:
    """503 in OpenAI's shape for every request that arrives while draining."""

    def __init__(self, app: ASGIApp, shutdown: Shutdown) -> None:
        self.app = app
        self.shutdown = shutdown

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.shutdown.is_draining and scope["path"] not in _OPEN_WHILE_DRAINING:
            await shutting_down_error().response()(scope, receive, send)
            return
        await self.app(scope, receive, send)
