"""The HTTP server at tensor-parallel 3 on the default model (9 heads, 3 KV heads: one KV head per rank),
as its registry entry serves it (int4, the GGUF's 4-bit tensors sliced per rank): it answers the end-to-end
question, and it goes down cleanly when a rank dies."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import spawn_server

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def tp3_server(default_entry, tmp_path_factory):
    """(process, url, log file) of `python -m hearth.server --tensor-parallel-size 3`, once healthy."""
    log = tmp_path_factory.mktemp("tp3") / "server.log"
    process, url = spawn_server("--tensor-parallel-size", "3", "--max-model-len", "2048", "--kv-cache-memory-gib", "0.25",
                                log=log)
    try:
        yield process, url, log
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


def test_tp3_server_answers_the_capital_of_france(tp3_server):
    _, url, log = tp3_server
    response = httpx.post(url + "/v1/chat/completions", timeout=120, json={
        "model": "smollm2-135m-instruct", "messages": QUESTION, "temperature": 0})
    assert response.status_code == 200, response.text
    choice = response.json()["choices"][0]
    assert "Paris" in choice["message"]["content"]
    assert choice["finish_reason"] == "stop"
    text = log.read_text()
    assert "rank 2 of 3: query heads (6, 9), KV heads (2, 3)" in text


def test_killing_a_rank_answers_503_and_exits_non_zero_within_30_s(tp3_server):
    process, url, log = tp3_server
    pids = {int(rank): int(pid) for rank, pid in re.findall(r"tensor parallel: rank (\d+) is pid (\d+)", log.read_text())}
    assert sorted(pids) == [1, 2]
    os.kill(pids[2], signal.SIGKILL)
    statuses = []
    deadline = time.monotonic() + 30
    while process.poll() is None and time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            statuses.append(httpx.get(url + "/health", timeout=1).status_code)
        time.sleep(0.1)
    assert process.poll() is not None, "the server still runs 30 s after a rank died"
    assert process.returncode != 0
    assert 503 in statuses
    assert 200 not in statuses[statuses.index(503):]
    time.sleep(1)  # rank 1 ends with rank 0 (killed by it, or by its parent watch)
    assert not is_running(pids[1])


def is_running(pid: int) -> bool:
    """Alive and not a zombie (an orphan nobody has reaped yet has ended all the same)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")
