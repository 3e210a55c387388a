"""POST /v1/completions: the legacy text-completion API, answered whole or as server-sent events."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from hearth.engine.llm_engine import ContextLengthError
from hearth.server.async_engine import EngineDeadError
from hearth.server.completions.plan import plan_completion
from hearth.server.completions.protocol import CompletionRequest
from hearth.server.completions.run import CompletionRun, Generate
from hearth.server.errors import APIError
from hearth.server.http.disconnect import ClientDisconnected, unless_disconnected
from hearth.server.http.metrics import CLIENT_CLOSED
from hearth.server.http.openapi import completion_responses

logger = logging.getLogger("hearth.server")


def engine_error(exc: Exception, is_draining: bool, prompt_param: str = "prompt") -> APIError:
    """The answer to a request the engine refused or could not finish."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, EngineDeadError):
        return APIError(503, str(exc), code="server_shutting_down" if is_draining else "engine_dead")
    if isinstance(exc, ContextLengthError):
        return APIError(400, str(exc), param=prompt_param, code="context_length_exceeded")
    if isinstance(exc, ValueError):
        return APIError(400, str(exc))
    return APIError(500, f"internal server error: {type(exc).__name__}: {exc}")


def install_completions(app: FastAPI) -> None:
    """The route over app.state's adapter, engine, admission, metrics and shutdown."""

    @app.post("/v1/completions", response_model=None, responses=completion_responses())
    async def completions(body: CompletionRequest, request: Request):
        state = request.app.state
        arrival = time.monotonic()
        with state.admission.planning():
            plan = plan_completion(state.adapter, body)
        logger.info("%s: %d prompt(s), best_of=%d, n=%d, echo=%s, stream=%s, user=%s", plan.request_id,
                    len(plan.prompts), plan.best_of, plan.n, plan.echo, plan.is_stream, body.user)

        def generate(request_id, prompt, params):
            outputs = state.async_engine.generate(request_id, prompt, params)
            return state.metrics.track(outputs, arrival, params.n)

        run = CompletionRun(state.adapter, plan)
        if plan.is_stream:
            return StreamingResponse(stream_completion(run, generate, state.shutdown), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        try:
            await unless_disconnected(request, _collect(run, generate))
        except ClientDisconnected:
            logger.info("%s: client disconnected; aborted", plan.request_id)
            return Response(status_code=CLIENT_CLOSED)
        except Exception as exc:
            raise engine_error(exc, state.shutdown.is_draining) from exc
        return JSONResponse(run.body())


async def _collect(run: CompletionRun, generate: Generate) -> None:
    async for index, (kind, output) in run.outputs(generate):
        run.add(index, kind, output)


def _event(body: dict[str, Any]) -> str:
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


async def stream_completion(run: CompletionRun, generate: Generate, shutdown) -> AsyncIterator[str]:
    """A chunk for each step's text of the choices (an echoed prompt first), with stream_options.include_usage
    a last chunk with no choices and the usage, then [DONE]; an error event ends a failed stream."""
    try:
        async for index, (kind, output) in run.outputs(generate):
            choices = run.add(index, kind, output)
            if choices:
                yield _event(run.chunk(choices))
    except Exception as exc:
        yield engine_error(exc, shutdown.is_draining).sse()
        return
    if run.plan.include_usage:
        yield _event(run.chunk([], usage=run.usage()))
    yield "data: [DONE]\n\n"
