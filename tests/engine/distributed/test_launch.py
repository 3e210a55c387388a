"""Spawning the ranks: a rank that dies before the rendezvous fails the start at once."""

from __future__ import annotations

import time

import pytest

from hearth.engine.config import EngineConfig
from hearth.engine.distributed.group import GroupConfig
from hearth.engine.distributed.launch import LocalRanks, _WorkerSpec
from hearth.engine.worker import run_worker


def test_a_rank_that_exits_before_joining_fails_the_start_at_once(tiny_entry):
    config = EngineConfig(model_path=str(tiny_entry.path), dtype="float32", tensor_parallel_size=2)
    # num_threads 0: torch.set_num_threads refuses it in the new process, before the rank joins.
    spec = _WorkerSpec(config, tiny_entry, GroupConfig(1, 2, "gloo", "tcp://127.0.0.1:9", local_rank=1), 0,
                       run_worker)
    ranks = LocalRanks([spec])
    start = time.monotonic()
    try:
        with pytest.raises(RuntimeError, match=r"hearth-rank-1 \(pid \d+\) exited with code 1 before joining"):
            ranks.wait_until_joining(timeout_s=120)
        assert time.monotonic() - start < 60  # not the rendezvous's timeout
    finally:
        ranks.join(kill=True)
