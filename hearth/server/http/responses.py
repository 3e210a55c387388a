"""POST /v1/responses: a stateless Responses request, run as the chat plan it translates to; answered
whole or as the Responses event stream (`event:` and `data:` lines, no [DONE])."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from hearth.server.chat.completion import compile_constraint
from hearth.server.errors import APIError
from hearth.server.http.completions import engine_error
from hearth.server.http.disconnect import ClientDisconnected, unless_disconnected
from hearth.server.http.metrics import CLIENT_CLOSED
from hearth.server.http.openapi import response_responses
from hearth.server.responses.output import Event, ResponseOutput
from hearth.server.responses.protocol import ResponseRequest
from hearth.server.responses.translate import Names, chat_request

logger = logging.getLogger("hearth.server")


def install_responses(app: FastAPI) -> None:
    """The route over app.state's adapter, engine, admission, metrics and shutdown."""

    @app.post("/v1/responses", response_model=None, responses=response_responses())
    async def responses(body: ResponseRequest, request: Request):
        state = request.app.state
        arrival = time.monotonic()
        names = Names()
        try:
            with state.admission.planning():
                chat, names = chat_request(body)
                plan = state.adapter.plan(chat)
                if plan.constraint is not None:
                    plan = await run_in_threadpool(compile_constraint, state.async_engine.engine, plan)
        except APIError as exc:
            raise names.error(exc) from exc
        output = ResponseOutput(state.adapter, plan, body)
        logger.info("%s (%s): %d prompt tokens, stream=%s, user=%s", output.id, plan.request_id,
                    len(plan.prompt_token_ids), plan.is_stream, body.user)
        outputs = state.metrics.track(state.async_engine.generate(plan.request_id, plan.prompt_token_ids, plan.params),
                                      arrival, plan.params.n)
        events = _events(output, outputs, names, state.shutdown)
        if plan.is_stream:
            return StreamingResponse(_sse(events), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        try:
            last = await unless_disconnected(request, _last(events))
        except ClientDisconnected:
            logger.info("%s: client disconnected; aborted", output.id)
            return Response(status_code=CLIENT_CLOSED)
        if last["type"] == "error":
            raise APIError(last["status"], last["message"], param=last["param"], code=last["code"])
        return JSONResponse(last["response"])


async def _events(output: ResponseOutput, outputs, names: Names, shutdown) -> AsyncIterator[Event]:
    """The response's events, ending with response.completed or response.incomplete, or with an error
    event when the request fails."""
    for event in output.start():
        yield event
    try:
        async for step in outputs:
            if step.error is not None:
                raise APIError(500, step.error)
            for event in output.add(step):
                yield event
    except Exception as exc:
        yield output.error(names.error(engine_error(exc, shutdown.is_draining, prompt_param="messages")))
        return
    for event in output.finish():
        yield event


async def _last(events: AsyncIterator[Event]) -> Event:
    last = None
    async for event in events:
        last = event
    return last


async def _sse(events: AsyncIterator[Event]) -> AsyncIterator[str]:
    async for event in events:
        if event["type"] == "error":
            event = {key: value for key, value in event.items() if key != "status"}
        yield f"event: {event['type']}\ndata: {json.dumps(event, ensure_ascii=False)}\n\n"
