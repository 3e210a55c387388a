"""The FastAPI application: /v1/chat/completions, /v1/models, /health."""

from __future__ import annotations

import logging
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from engine.llm_engine import ContextLengthError, LLMEngine
from engine.loading.registry import ModelEntry
from server.async_engine import AsyncEngine
from server.completion import VERSION, Completion, chat_adapter, compile_constraint, request_error
from server.errors import (
    APIError,
    handle_api_error,
    handle_http_error,
    handle_unexpected_error,
    handle_validation_error,
)
from server.protocol import ChatCompletionRequest

logger = logging.getLogger("hearth.server")


def build_app(engine: LLMEngine, entry: ModelEntry, is_engine_external: bool = False) -> FastAPI:
    """The app over `engine`. Its lifespan runs the engine loop in a thread, unless is_engine_external:
    then the caller runs app.state.async_engine.run_forever() itself (python -m server does, in the
    main thread)."""
    async_engine = AsyncEngine(engine)
    adapter = chat_adapter(engine, entry)
    created = int(time.time())

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if not is_engine_external:
            async_engine.start()
        yield
        if not is_engine_external:
            async_engine.stop()

    app = FastAPI(title="hearth", version=VERSION, lifespan=lifespan)
    app.state.async_engine = async_engine
    app.state.adapter = adapter
    app.add_exception_handler(RequestValidationError, handle_validation_error)
    app.add_exception_handler(APIError, handle_api_error)
    app.add_exception_handler(StarletteHTTPException, handle_http_error)
    app.add_exception_handler(Exception, handle_unexpected_error)

    @app.get("/health")
    async def health() -> JSONResponse:
        if not async_engine.is_alive:
            raise APIError(503, "the engine is not running", code="engine_dead")
        stats = engine.stats()
        return JSONResponse({"status": "ok", "model": entry.id, "steps": async_engine.num_steps, **stats})

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": entry.id, "object": "model", "created": created, "owned_by": "hearth"}]}

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str) -> dict:
        adapter.check_model(model_id)
        return {"id": entry.id, "object": "model", "created": created, "owned_by": "hearth"}

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        plan = adapter.plan(body)
        if plan.constraint is not None:  # compiled off the event loop and the engine thread
            plan = await run_in_threadpool(compile_constraint, engine, plan)
        logger.info("%s: %d prompt tokens, n=%d, stream=%s, user=%s", plan.request_id, len(plan.prompt_token_ids),
                    plan.params.n, plan.is_stream, body.user)
        outputs = async_engine.generate(plan.request_id, plan.prompt_token_ids, plan.params)
        if plan.is_stream:
            from server.streaming import stream_chat

            return StreamingResponse(stream_chat(adapter, plan, outputs), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        completion = Completion(adapter, plan)
        try:
            async for output in outputs:
                completion.add(output)
        except (ContextLengthError, ValueError) as exc:
            raise request_error(exc) from exc
        return JSONResponse(completion.body())

    return app
