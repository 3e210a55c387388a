"""The OpenAPI document says what the server does (no 422; errors and response schemas documented) and
/docs works without network access."""

from __future__ import annotations

import re

ERROR_REF = "#/components/schemas/ErrorResponse"


def test_no_422_anywhere(app_client):
    text = app_client.get("/openapi.json").text
    assert '"422"' not in text and "HTTPValidationError" not in text


def test_chat_completions_documents_its_responses(app_client):
    schema = app_client.get("/openapi.json").json()
    responses = schema["paths"]["/v1/chat/completions"]["post"]["responses"]
    assert set(responses) == {"200", "400", "401", "404", "413", "429", "500", "503"}
    ok = responses["200"]["content"]
    assert ok["application/json"]["schema"]["$ref"] == "#/components/schemas/ChatCompletion"
    event_data = ok["text/event-stream"]["schema"]["properties"]["data"]["anyOf"]
    assert {"const": "[DONE]"} in event_data
    chunk_refs = [r["$ref"] for branch in event_data for r in branch.get("contentSchema", {}).get("anyOf", [])]
    assert chunk_refs == ["#/components/schemas/ChatCompletionChunk", ERROR_REF]
    for status in ("400", "401", "404", "413", "429", "500", "503"):
        assert responses[status]["content"]["application/json"]["schema"]["$ref"] == ERROR_REF, status
    components = schema["components"]["schemas"]
    assert {"ChatCompletion", "ChatCompletionChunk", "ErrorResponse", "ChunkDelta"} <= set(components)
    for ref in re.findall(r'"\$ref": ?"#/components/schemas/([^"]+)"', app_client.get("/openapi.json").text):
        assert ref in components, ref


def test_completions_documents_its_responses(app_client):
    schema = app_client.get("/openapi.json").json()
    operation = schema["paths"]["/v1/completions"]["post"]
    responses = operation["responses"]
    assert set(responses) == {"200", "400", "401", "404", "413", "429", "500", "503"}
    ok = responses["200"]["content"]
    assert ok["application/json"]["schema"]["$ref"] == "#/components/schemas/Completion"
    event_data = ok["text/event-stream"]["schema"]["properties"]["data"]["anyOf"]
    refs = [r["$ref"] for branch in event_data for r in branch.get("contentSchema", {}).get("anyOf", [])]
    assert refs == ["#/components/schemas/Completion", ERROR_REF]
    request = schema["components"]["schemas"]["CompletionRequest"]
    assert {"prompt", "echo", "logprobs", "best_of", "suffix", "stream"} <= set(request["properties"])


def test_responses_documents_its_responses(app_client):
    schema = app_client.get("/openapi.json").json()
    responses = schema["paths"]["/v1/responses"]["post"]["responses"]
    assert set(responses) == {"200", "400", "401", "404", "413", "429", "500", "503"}
    ok = responses["200"]["content"]
    assert ok["application/json"]["schema"]["$ref"] == "#/components/schemas/ResponseObject"
    event_data = ok["text/event-stream"]["schema"]["properties"]["data"]["anyOf"]
    refs = [r["$ref"] for branch in event_data for r in branch.get("contentSchema", {}).get("anyOf", [])]
    assert refs == ["#/components/schemas/ResponseStreamEvent", ERROR_REF]
    request = schema["components"]["schemas"]["ResponseRequest"]
    assert {"input", "instructions", "tools", "text", "store", "previous_response_id"} <= set(request["properties"])


def test_documented_schemas_match_real_responses(app_client):
    from hearth.server.chat.responses import ChatCompletion, ChatCompletionChunk, ErrorResponse

    body = {"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3,
            "logprobs": True, "top_logprobs": 2}
    ChatCompletion.model_validate(app_client.post("/v1/chat/completions", json=body).json())
    stream = app_client.post("/v1/chat/completions", json=dict(body, stream=True, stream_options={"include_usage": True}))
    import json

    events = [line[6:] for line in stream.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    for event in events[:-1]:
        ChatCompletionChunk.model_validate(json.loads(event))
    ErrorResponse.model_validate(app_client.post("/v1/chat/completions", json=dict(body, n=0)).json())


def test_docs_page_loads_only_local_assets(app_client):
    page = app_client.get("/docs")
    assert page.status_code == 200
    urls = re.findall(r'(?:src|href)="([^"]+)"', page.text) + re.findall(r"url: '([^']+)'", page.text)
    assert urls and not [u for u in urls if "://" in u or u.startswith("//")], urls
    for url in urls:
        assert app_client.get(url).status_code == 200, url
    assert "swagger-ui-bundle.js" in page.text
    assert app_client.get("/redoc").status_code == 404
