"""The paged KV cache's storage: zero where never written, and on the CPU resident only where touched, so a
cache of gigabytes costs nothing at start."""

from __future__ import annotations

import torch

from hearth.engine.model.kv_cache import KVCache


def _resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def test_a_large_cpu_cache_is_zero_and_resident_only_where_written():
    before = _resident_bytes()
    # 28 layers x 16384 slots x 2 x 8 heads x 64 x 2 bytes = 896 MiB.
    cache = KVCache(28, 1024, 16, 8, 64, torch.bfloat16, torch.device("cpu"))
    assert cache.data.shape == (28, 16384, 2, 8, 64) and cache.data.dtype == torch.bfloat16
    assert _resident_bytes() - before < 64 << 20, "the whole cache became resident at start"
    layer = cache.layer(27)
    assert torch.count_nonzero(layer[-16:]) == 0 and torch.count_nonzero(cache.layer(0)[:16]) == 0
    layer[5] = 1.5
    cache.copy_blocks([(0, 1023)])
    assert torch.equal(cache.layer(27)[1023 * 16 + 5], torch.full((2, 8, 64), 1.5, dtype=torch.bfloat16))
    assert torch.count_nonzero(cache.data) == 2 * 2 * 8 * 64
