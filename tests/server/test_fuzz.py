"""Schemathesis over the OpenAPI document, in-process against the real engine: every generated request,
valid or not, gets an answer the document describes (status, content type, schema) and never a 5xx.

Generated bodies are adjusted before they are sent (cap()): a string `model` becomes the served model's
id (a random name only ever meets the 404), completions are capped at MAX_TOKENS tokens, n and best_of at
MAX_N, prompts at MAX_N of MAX_PROMPT tokens or characters (an echoed prompt is scored a token a step)
(asking for more only takes longer), so the run stays within a few minutes. The examples are
derandomized: CI sends the same requests every run.
"""

from __future__ import annotations

import collections
import time
from concurrent.futures import Future, ThreadPoolExecutor

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

CHAT_EXAMPLES = 120
# The other generating APIs: fewer fields than chat's to cover.
EXAMPLES = {"/v1/chat/completions": CHAT_EXAMPLES, "/v1/completions": 30, "/v1/responses": 30}
OTHER_EXAMPLES = 15
MAX_TOKENS = 1
MAX_N = 2
MAX_PROMPT = 8
LENGTH_FIELDS = {"/v1/completions": "max_tokens", "/v1/responses": "max_output_tokens"}
MODEL = "smollm2-135m-instruct"
CONCURRENCY = 32
# Generous: a slow shared machine must not turn into a failure; a hang still ends the test.
CALL_TIMEOUT_S = 300
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


class WithoutLifespan:
    """The session app without its lifespan: its engine loop already runs and must outlive this test."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        await self.app(scope, receive, send)


def _is_number(value) -> bool:
    # 2.0 is a valid integer to the server (pydantic's lax mode), so floats are capped too.
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def cap(body, path: str = "/v1/chat/completions"):
    """Bound the work a generated request asks for, leaving invalid values as generated."""
    if not isinstance(body, dict):
        return body
    if isinstance(body.get("model"), str):  # a random name is only ever a 404; reach the engine instead
        body["model"] = MODEL
    fields = ("max_tokens", "max_completion_tokens", "max_output_tokens")
    for field in fields:
        if _is_number(body.get(field)) and body[field] > MAX_TOKENS:
            body[field] = MAX_TOKENS
    length_field = LENGTH_FIELDS.get(path, "max_completion_tokens")
    if all(body.get(field) is None for field in fields):
        body[length_field] = MAX_TOKENS
    for field in ("n", "best_of"):
        if _is_number(body.get(field)) and body[field] > MAX_N:
            body[field] = MAX_N
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        body["prompt"] = prompt[:MAX_PROMPT]
    elif isinstance(prompt, list):
        # Each prompt runs as its own engine request (n choices, and a scoring one when echoed).
        body["prompt"] = [p[:MAX_PROMPT] if isinstance(p, (str, list)) else p for p in prompt[:MAX_PROMPT]]
        if body["prompt"] and not all(isinstance(p, int) for p in body["prompt"]):
            body["prompt"] = body["prompt"][:MAX_N]
    return body


def send_generated(operation, examples: int, pool: ThreadPoolExecutor) -> list[Future]:
    """Generate `examples` cases of `operation`, each sent as soon as it is generated."""
    futures = []

    @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy())
    def generate(case) -> None:
        case.body = cap(case.body, operation.path)
        if futures:
            futures.append(pool.submit(call_and_check, case))
            return
        # The first case runs here, in the main thread: schemathesis imports its transport lazily on a
        # first call, and 32 threads importing it at once through pytest's assertion rewriting hit CPython
        # 3.11's thread-unsafe AST recursion counter ("SystemError: AST constructor recursion depth
        # mismatch", seen in a fresh-clone .ci/run on 2026-11-30).
        first: Future = Future()
        first.set_result(call_and_check(case))
        futures.append(first)

    generate()
    return futures


def call_and_check(case) -> tuple[int, str | None]:
    """(status, failure or None): a 5xx, or a response the document does not describe."""
    response = case.call(timeout=CALL_TIMEOUT_S)
    try:
        case.validate_response(response, checks=CHECKS)
    except Exception as exc:  # schemathesis raises its failures grouped; the text names each one
        return response.status_code, f"{case.method} {case.path} {case.body!r:.300}: {exc!s:.500}"
    return response.status_code, None


@pytest.mark.slow
def test_generated_requests_never_get_a_5xx(app_client):
    schema = schemathesis.openapi.from_asgi("/openapi.json", WithoutLifespan(app_client.app))
    started = time.monotonic()
    # Sent CONCURRENCY at a time, as clients would, while the next ones are generated: the engine batches
    # them, which keeps the run short.
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        futures = []
        for result in schema.get_all_operations():
            operation = result.ok()
            examples = EXAMPLES.get(operation.path, OTHER_EXAMPLES)
            futures += send_generated(operation, examples, pool)
        outcomes = [future.result() for future in futures]
    statuses = collections.Counter(status for status, _ in outcomes)
    failures = [failure for _, failure in outcomes if failure is not None]
    print(f"\nschemathesis: {len(outcomes)} requests in {time.monotonic() - started:.0f} s, "
          f"{sum(n for s, n in statuses.items() if s >= 500)} of 5xx, "
          f"{len(failures)} not as documented; by status: {dict(sorted(statuses.items()))}")
    assert not failures, failures[:5]
    assert statuses[200] > 0 and len(outcomes) >= CHAT_EXAMPLES
