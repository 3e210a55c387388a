"""The FastAPI application: /v1/chat/completions, /v1/completions, /v1/responses, /v1/models, /health,
/metrics, /docs."""

from __future__ import annotations

import importlib.util
import logging
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from hearth.engine.llm_engine import ContextLengthError, LLMEngine
from hearth.engine.loading.registry import ModelEntry
from hearth.engine.runtime import kernel_report
from hearth.server.async_engine import AsyncEngine, EngineDeadError
from hearth.server.chat.adapter import ChatPlan
from hearth.server.chat.completion import VERSION, Completion, chat_adapter, compile_constraint, request_error
from hearth.server.chat.protocol import ChatCompletionRequest
from hearth.server.chat.responses import ModelCard, ModelList
from hearth.server.config import ServerConfig
from hearth.server.errors import (
    APIError,
    handle_api_error,
    handle_http_error,
    handle_unexpected_error,
    handle_validation_error,
)
from hearth.server.http.admission import Admission
from hearth.server.http.auth import AuthMiddleware, KeyChecker
from hearth.server.http.body_limit import BodyLimitMiddleware
from hearth.server.http.completions import install_completions
from hearth.server.http.disconnect import ClientDisconnected, unless_disconnected
from hearth.server.http.metrics import CLIENT_CLOSED, Metrics, MetricsMiddleware
from hearth.server.http.openapi import chat_responses, error_responses, install_docs, install_openapi
from hearth.server.http.responses import install_responses
from hearth.server.http.shutdown import Shutdown, ShutdownMiddleware, shutting_down_error

logger = logging.getLogger("hearth.server")


def build_app(engine: LLMEngine, entry: ModelEntry, is_engine_external: bool = False,
              config: ServerConfig | None = None) -> FastAPI:
    """The app over `engine`. Its lifespan runs the engine loop in a thread, unless is_engine_external:
    then the caller runs app.state.async_engine.run_forever() itself (python -m hearth.server does, in the
    main thread)."""
    config = config or ServerConfig()
    async_engine = AsyncEngine(engine)
    adapter = chat_adapter(engine, entry)
    admission = Admission(config.max_waiting_requests, async_engine.num_queued)
    metrics = Metrics(engine.stats, lambda: admission.num_waiting)
    shutdown = Shutdown(config.shutdown_timeout_s)
    created = int(time.time())
    # Constrained decoding needs the `structured` extra (see pyproject.toml); probes and logs say if it is missing.
    has_constrained_decoding = importlib.util.find_spec("xgrammar") is not None
    kernels = kernel_report()
    if not has_constrained_decoding:
        logger.warning("xgrammar is not installed: response_format json_object/json_schema and forced tool calls "
                       "will be refused (install hearth[structured])")

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if not is_engine_external:
            async_engine.start()
        yield
        if not is_engine_external:
            async_engine.stop()

    app = FastAPI(title="hearth", version=VERSION, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="OpenAI-style chat completions, text completions and responses served by a local engine.")
    app.state.async_engine = async_engine
    app.state.adapter = adapter
    app.state.admission = admission
    app.state.metrics = metrics
    app.state.shutdown = shutdown
    app.add_exception_handler(RequestValidationError, handle_validation_error)
    app.add_exception_handler(APIError, handle_api_error)
    app.add_exception_handler(StarletteHTTPException, handle_http_error)
    app.add_exception_handler(Exception, handle_unexpected_error)
    # The last added runs first: count every response, then refuse while draining, then check the key,
    # then the body size.
    app.add_middleware(BodyLimitMiddleware, max_bytes=config.max_request_bytes)
    app.add_middleware(AuthMiddleware, checker=KeyChecker(config.api_keys), protect_metrics=config.metrics_require_key)
    app.add_middleware(ShutdownMiddleware, shutdown=shutdown)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    install_openapi(app, has_keys=bool(config.api_keys))
    install_docs(app)

    @app.get("/health", responses=error_responses(503))
    async def health() -> JSONResponse:
        if shutdown.is_draining:
            raise shutting_down_error()
        if not async_engine.is_alive:
            raise APIError(503, "the engine is not running", code="engine_dead")
        stats = engine.stats()
        return JSONResponse({"status": "ok", "model": entry.id, "steps": async_engine.num_steps,
                             "constrained_decoding": has_constrained_decoding, "kernels": kernels, **stats})

    @app.get("/metrics", response_class=Response, responses={
        200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}, **error_responses(401)})
    async def prometheus_metrics() -> Response:
        return metrics.response()

    @app.get("/v1/models", response_model=ModelList, responses=error_responses(401, 503))
    async def models() -> dict:
        return {"object": "list", "data": [{"id": entry.id, "object": "model", "created": created, "owned_by": "hearth"}]}

    @app.get("/v1/models/{model_id:path}", response_model=ModelCard, responses=error_responses(401, 404, 503))
    async def model(model_id: str) -> dict:
        adapter.check_model(model_id)
        return {"id": entry.id, "object": "model", "created": created, "owned_by": "hearth"}

    async def planned(body: ChatCompletionRequest) -> ChatPlan:
        """The request's plan, its grammar compiled off the event loop and the engine thread (cached per spec)."""
        plan = adapter.plan(body)
        if plan.constraint is not None:
            plan = await run_in_threadpool(compile_constraint, engine, plan)
        return plan

    async def collect(plan: ChatPlan, outputs) -> Completion:
        completion = Completion(adapter, plan)
        async for output in outputs:
            completion.add(output)
        return completion

    @app.post("/v1/chat/completions", response_model=None, responses=chat_responses())
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        arrival = time.monotonic()
        with admission.planning():
            plan = await planned(body)
        logger.info("%s: %d prompt tokens, n=%d, stream=%s, user=%s", plan.request_id, len(plan.prompt_token_ids),
                    plan.params.n, plan.is_stream, body.user)
        outputs = metrics.track(async_engine.generate(plan.request_id, plan.prompt_token_ids, plan.params),
                                arrival, plan.params.n)
        if plan.is_stream:
            from hearth.server.http.streaming import stream_chat

            return StreamingResponse(stream_chat(adapter, plan, outputs), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        try:
            completion = await unless_disconnected(request, collect(plan, outputs))
        except ClientDisconnected:
            logger.info("%s: client disconnected; aborted", plan.request_id)
            return Response(status_code=CLIENT_CLOSED)
        except EngineDeadError as exc:
            raise APIError(503, str(exc), code="server_shutting_down" if shutdown.is_draining else "engine_dead") from exc
        except (ContextLengthError, ValueError) as exc:
            raise request_error(exc) from exc
        return JSONResponse(completion.body())

    install_completions(app)
    install_responses(app)
    return app
