"""End to end: the real server on the default model, driven by the official openai client."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[2]
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def server_url(default_entry):
    port = free_port()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    process = subprocess.Popen(
        [sys.executable, "-m", "hearth.server", "--models", str(REPO / "models.yaml"), "--port", str(port), "--log-level", "warning"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"server exited early:\n{process.stdout.read()}")
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            pytest.fail("server did not become healthy within 180 s")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="module")
def client(server_url):
    from openai import OpenAI

    return OpenAI(base_url=server_url + "/v1", api_key="unused", max_retries=0, timeout=120)


def test_models_and_health(client, server_url):
    assert [m.id for m in client.models.list().data] == ["smollm2-135m-instruct"]
    assert httpx.get(server_url + "/health").json()["status"] == "ok"


def test_capital_of_france_streamed_equals_non_streamed(client):
    response = client.chat.completions.create(model="smollm2-135m-instruct", messages=QUESTION, temperature=0)
    text = response.choices[0].message.content
    assert "Paris" in text
    assert response.choices[0].finish_reason == "stop"
    assert response.usage.completion_tokens > 0
    assert response.usage.total_tokens == response.usage.prompt_tokens + response.usage.completion_tokens

    stream = client.chat.completions.create(
        model="smollm2-135m-instruct", messages=QUESTION, temperature=0, stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == text
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == response.usage.completion_tokens


def test_max_tokens_gives_finish_reason_length(client):
    response = client.chat.completions.create(
        model="smollm2-135m-instruct", messages=[{"role": "user", "content": "Write a long story about a dragon."}],
        temperature=0, max_completion_tokens=5,
    )
    assert response.choices[0].finish_reason == "length"
    assert response.usage.completion_tokens == 5


def test_errors_reach_the_client_as_openai_errors(client):
    import openai

    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="no-such-model", messages=QUESTION)
    assert info.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="smollm2-135m-instruct", messages=QUESTION, temperature=3)
    assert info.value.param == "temperature"


def test_tool_call_round_trip_through_the_openai_client(client):
    tools = [{"type": "function", "function": {
        "name": "get_weather", "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 40}},
                       "required": ["city"], "additionalProperties": False}}}]
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = client.chat.completions.create(model="smollm2-135m-instruct", messages=messages, tools=tools,
                                           tool_choice="required", parallel_tool_calls=False, temperature=0)
    assert first.choices[0].finish_reason == "tool_calls"
    call = first.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather" and "city" in json.loads(call.function.arguments)
    messages += [first.choices[0].message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": '{"temperature_c": 21, "sky": "clear"}'}]
    final = client.chat.completions.create(model="smollm2-135m-instruct", messages=messages, tools=tools,
                                           temperature=0, max_completion_tokens=60)
    assert final.choices[0].message.content
    assert final.usage.prompt_tokens > first.usage.prompt_tokens


def test_a_chat_resent_with_its_history_reports_its_cached_prompt_tokens(client, server_url, default_entry):
    import torch

    from hearth.engine.config import EngineConfig
    from hearth.kernels.model import row_attention

    fields = EngineConfig.__dataclass_fields__  # the server runs the defaults
    chunk, block = fields["prefill_chunk_size"].default, fields["block_size"].default
    system = "You keep a ship's log. " + "Wind, sea state, course and speed are logged every watch. " * 60
    messages = [{"role": "system", "content": system}, {"role": "user", "content": "Log the morning watch."}]
    first = client.chat.completions.create(model="smollm2-135m-instruct", messages=messages, temperature=0,
                                           max_completion_tokens=8)
    assert first.usage.prompt_tokens > chunk
    messages += [{"role": "assistant", "content": first.choices[0].message.content},
                 {"role": "user", "content": "And the evening watch?"}]
    stream = client.chat.completions.create(model="smollm2-135m-instruct", messages=messages, temperature=0,
                                            max_completion_tokens=8, stream=True, stream_options={"include_usage": True})
    usage = list(stream)[-1].usage
    is_batch_invariant = default_entry.quantization != "none" and row_attention.unavailable_reason(
        9, 3, 64, torch.bfloat16, torch.device("cpu")) is None
    # A new system prompt: nothing cached, but for the chat template's opening tokens where a hit may end at
    # any token (earlier tests' requests computed them).
    assert first.usage.prompt_tokens_details.cached_tokens < (block if is_batch_invariant else 1)
    if is_batch_invariant:
        # int4 on the row kernel: the next turn reuses every token the first request computed, its prompt and
        # the answer's tokens but the last (never fed back), the answer's partly filled block copied.
        cached = first.usage.prompt_tokens + first.usage.completion_tokens - 1
    else:
        # The first prompt's whole blocks were cached, its short last chunk's included; the next turn reuses
        # them (not the answer's, which decode computed).
        cached = first.usage.prompt_tokens // block * block
        assert cached % chunk
    assert usage.prompt_tokens_details.cached_tokens == cached and cached > 0
    # The same request again reuses all of its own computed tokens, short of its last (whole blocks, or
    # every token where partial blocks are cached too).
    again = client.chat.completions.create(model="smollm2-135m-instruct", messages=messages, temperature=0,
                                           max_completion_tokens=8)
    reusable = usage.prompt_tokens - 1
    assert again.usage.prompt_tokens_details.cached_tokens == (reusable if is_batch_invariant
                                                               else reusable // block * block)
    health = httpx.get(server_url + "/health").json()
    assert health["prefix_cache_hit_tokens"] >= 2 * cached and health["prefix_cache_blocks"] > 0
    assert 0 < health["prefix_cache_hit_rate"] < 1


def test_a_client_that_disconnects_mid_stream_frees_its_sequence(server_url):
    body = {"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "Write a very long story."}],
            "max_completion_tokens": 2000, "stream": True, "seed": 1}
    with httpx.Client(timeout=60) as http:
        with http.stream("POST", server_url + "/v1/chat/completions", json=body) as response:
            lines = response.iter_lines()
            received = [next(lines) for _ in range(6)]
            assert any(line.startswith("data: ") for line in received)
            assert httpx.get(server_url + "/health").json()["kv_blocks_used"] > 0
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            health = httpx.get(server_url + "/health").json()
            if health["num_requests"] == 0 and health["kv_blocks_used"] == 0:
                break
            time.sleep(0.05)
        assert health["num_requests"] == 0 and health["kv_blocks_used"] == 0
