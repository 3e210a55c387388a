"""Shared fixtures: the default model's engine and app (loaded once), and tiny random Llama folders."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import socket
from pathlib import Path

import pytest
import torch

if not torch.cuda.is_available():
    # kernels/triton/'s tests run under Triton's interpreter on CPU tensors. triton reads this when
    # triton.language is first imported (its own helpers are decorated then), so before anything imports it.
    os.environ.setdefault("TRITON_INTERPRET", "1")

import hearth.engine  # noqa: F401  (forces HF offline)
from hearth.engine.config import EngineConfig
from hearth.engine.loading.registry import ModelEntry, ModelRegistry
from hearth.kernels import cpu_isa
from hearth.kernels.model.c_library import flag_sets

REPO = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(config, items):
    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA device")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


# The CPU levels this machine runs (hearth.kernels.cpu_isa, at or below HEARTH_CPU_ISA's cap), and those of
# them the C kernels are built for. Tests of level-dependent paths take one of the fixtures below, so one
# machine runs each such test at every level it has.
CPU_LEVELS = cpu_isa.runnable_levels()
C_KERNEL_LEVELS = tuple(level for level in CPU_LEVELS if flag_sets(level) is not None)


@contextlib.contextmanager
def capped_at(level: str):
    """HEARTH_CPU_ISA=level for the duration (every path decision reads the probe when it is made)."""
    before = os.environ.get(cpu_isa.ENV)
    os.environ[cpu_isa.ENV] = level
    try:
        yield level
    finally:
        if before is None:
            os.environ.pop(cpu_isa.ENV, None)
        else:
            os.environ[cpu_isa.ENV] = before


@pytest.fixture(params=CPU_LEVELS)
def cpu_level(request):
    with capped_at(request.param):
        yield request.param


@pytest.fixture(params=C_KERNEL_LEVELS)
def c_kernel_level(request):
    with capped_at(request.param):
        yield request.param


def skip_unless_mode_runs(quantization: str) -> None:
    """A weight format that cannot run at the current level (`bf16` below the C kernels' level) is refused at
    start, with the reason (hearth.engine.model.formats), and so is a test of it."""
    from hearth.engine.model.formats import parse_format

    reason = parse_format(quantization).unavailable_reason(torch.device("cpu"), torch.bfloat16)
    if reason is not None:
        pytest.skip(f"quantization={quantization} is refused at CPU level {cpu_isa.level()!r}: {reason}")


@pytest.fixture(scope="session")
def registry() -> ModelRegistry:
    return ModelRegistry.load(REPO / "models.yaml")


@pytest.fixture(scope="session")
def default_entry(registry) -> ModelEntry:
    """The default model as its HF folder, served int4 from the GGUF beside it: the folder's float32
    safetensors are what transformers' references load. (models.yaml serves the GGUF itself, which
    tests/engine/loading/test_gguf_in_place.py shows gives the same tokens and logprobs.)"""
    from hearth.engine.loading.fetch import reference_folder

    entry = registry.resolve(None)
    if not entry.exists():
        pytest.fail(f"the default model is missing at {entry.path}: run `make setup` first")
    if not entry.is_gguf:
        return entry
    return dataclasses.replace(entry, path=reference_folder(entry), quantization="int4")


@pytest.fixture(scope="session")
def default_engine(default_entry):
    from hearth.engine.llm_engine import LLMEngine

    return LLMEngine(EngineConfig(model_path=str(default_entry.path), max_num_seqs=32), default_entry)


@pytest.fixture(scope="session")
def app_client(default_engine, default_entry):
    from fastapi.testclient import TestClient

    from hearth.server.http.app import build_app

    with TestClient(build_app(default_engine, default_entry)) as client:
        yield client


def chat_prompt(engine_, text: str) -> list[int]:
    from hearth.engine.chat import render_chat

    return render_chat(engine_.tokenizer, [{"role": "user", "content": text}])


def run_to_completion(engine_, max_steps: int = 10_000) -> dict[str, dict[int, list[int]]]:
    """Step until idle; returns request id -> choice index -> generated token ids."""
    tokens: dict[str, dict[int, list[int]]] = {}
    for _ in range(max_steps):
        if not engine_.has_unfinished_requests():
            return tokens
        for output in engine_.step():
            for delta in output.choices:
                tokens.setdefault(output.request_id, {}).setdefault(delta.index, []).extend(delta.token_ids)
    raise AssertionError("engine did not finish")


def save_tiny_llama(folder: Path, default_entry: ModelEntry, *, tie_word_embeddings: bool) -> Path:
    """A random 2-layer Llama (4 heads, 2 KV heads, seed 0) with the default model's tokenizer, saved as an
    HF folder."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, rms_norm_eps=1e-5,
        tie_word_embeddings=tie_word_embeddings, bos_token_id=1, eos_token_id=2, pad_token_id=2,
        architectures=["LlamaForCausalLM"],
    )
    LlamaForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"):
        source = default_entry.path / name
        if source.exists():
            shutil.copy(source, folder / name)
    return folder


def free_port() -> int:
    """A free TCP port on 127.0.0.1, for servers the tests start."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def spawn_server(*args: str, env: dict[str, str] | None = None, log: Path | None = None):
    """`python -m hearth.server` on a free loopback port, once healthy: (process, url). Its output goes to `log`
    when given, else to a pipe. A free port can be taken before the server binds it (a tensor-parallel
    server's gloo connections use ephemeral ports too): then it starts again on another, up to 3 times."""
    for attempt in range(3):
        started = _spawn_server_once(args, env, log, is_last_attempt=attempt == 2)
        if started is not None:
            return started
    raise AssertionError("unreachable")


def _spawn_server_once(args, env, log, is_last_attempt: bool):
    """(process, url) once healthy, or None when the port was taken before the server bound it."""
    import subprocess
    import sys
    import time

    import httpx

    port = free_port()
    command = [sys.executable, "-m", "hearth.server", "--models", str(REPO / "models.yaml"), "--port", str(port), *args]
    environment = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    if log is None:
        process = subprocess.Popen(command, cwd=REPO, env=environment, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
    else:
        with open(log, "w") as out:
            process = subprocess.Popen(command, cwd=REPO, env=environment, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = process.stdout.read() if log is None else log.read_text()
            if "address already in use" in output and not is_last_attempt:
                return None
            pytest.fail(f"server exited early:\n{output}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    process.kill()
    pytest.fail(f"server did not become healthy within 180 s{'' if log is None else ':' + chr(10) + log.read_text()}")


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, default_entry) -> Path:
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), default_entry, tie_word_embeddings=True)


@pytest.fixture(scope="session")
def tiny_entry(tiny_llama_dir) -> ModelEntry:
    return ModelEntry(id="tiny", path=tiny_llama_dir, max_model_len=512)


def write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data))
