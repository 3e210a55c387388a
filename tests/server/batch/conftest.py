"""An engine of the batch runner's own: the session's default_engine is stepped by app_client's thread."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hearth.engine.config import EngineConfig

MODEL = "smollm2-135m-instruct"
URL = "/v1/chat/completions"


@pytest.fixture(scope="session")
def batch_engine(default_entry):
    from hearth.engine.llm_engine import LLMEngine

    return LLMEngine(EngineConfig(model_path=str(default_entry.path), max_num_seqs=16, kv_cache_memory_gib=0.25),
                     default_entry)


@pytest.fixture(scope="session")
def batch_runner(batch_engine, default_entry):
    from hearth.server.batch.runner import BatchRunner
    from hearth.server.chat.completion import chat_adapter

    return BatchRunner(batch_engine, chat_adapter(batch_engine, default_entry))


@pytest.fixture(scope="session")
def lone_runner(default_entry):
    """A runner whose engine takes one sequence at a time: every request runs alone, as the test client's
    requests do on the server; test_runner.py also checks the batched runner against them."""
    from hearth.engine.llm_engine import LLMEngine
    from hearth.server.batch.runner import BatchRunner
    from hearth.server.chat.completion import chat_adapter

    engine_ = LLMEngine(EngineConfig(model_path=str(default_entry.path), max_num_seqs=1, kv_cache_memory_gib=0.25),
                        default_entry)
    return BatchRunner(engine_, chat_adapter(engine_, default_entry))


def line(custom_id: str, body, method: str = "POST", url: str = URL) -> dict:
    return {"custom_id": custom_id, "method": method, "url": url, "body": body}


def chat(text: str, **fields) -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": text}], "max_completion_tokens": 4, **fields}


def write_lines(path: Path, lines: list) -> Path:
    path.write_text("".join((item if isinstance(item, str) else json.dumps(item)) + "\n" for item in lines))
    return path


def read_records(path: Path) -> list[dict]:
    return [json.loads(text) for text in path.read_text().splitlines()]


def comparable(body: dict) -> dict:
    """A response body without what differs between two runs of the same request (ids, times, and the prompt
    tokens the prefix cache held, which depends on what ran before)."""
    kept = {k: v for k, v in body.items() if k not in ("id", "created")}
    if isinstance(kept.get("usage"), dict):
        kept["usage"] = {k: v for k, v in kept["usage"].items() if k != "prompt_tokens_details"}
    return kept
