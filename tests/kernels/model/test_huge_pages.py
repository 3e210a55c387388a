"""The arena the packed weights are copied into: same values, aligned, and on 2 MiB pages where Linux
grants them."""

from __future__ import annotations

import pytest
import torch

from hearth.kernels.model.huge_pages import ALIGNMENT, HUGE_PAGE_BYTES, HugePageArena, transparent_huge_pages_mode


def _anon_huge_kib(address: int) -> int:
    """AnonHugePages of the mapping that holds `address` in this process (/proc/self/smaps)."""
    with open("/proc/self/smaps") as f:
        inside = False
        for line in f:
            fields = line.split()
            if "-" in fields[0] and len(fields) >= 5:
                start, end = (int(part, 16) for part in fields[0].split("-"))
                inside = start <= address < end
            elif inside and fields[0] == "AnonHugePages:":
                return int(fields[1])
    return 0


def test_copies_keep_values_shapes_and_dtypes_each_on_a_cache_line():
    generator = torch.Generator().manual_seed(0)
    tensors = [torch.randint(0, 255, (3, 7, 1024), generator=generator, dtype=torch.uint8),
               torch.randn(33, 5, generator=generator).to(torch.bfloat16), torch.randn(17, generator=generator)]
    arena = HugePageArena(HugePageArena.bytes_for(tensors))
    assert arena.data_ptr % HUGE_PAGE_BYTES == 0
    placed = [arena.copy(t) for t in tensors]
    for source, copy in zip(tensors, placed):
        assert copy.dtype == source.dtype and torch.equal(copy, source) and copy.is_contiguous()
        assert copy.data_ptr() % ALIGNMENT == 0
    with pytest.raises(ValueError, match="no room"):
        arena.copy(torch.zeros(HUGE_PAGE_BYTES, dtype=torch.uint8))


@pytest.mark.skipif(transparent_huge_pages_mode() not in ("madvise", "always"),
                    reason=f"transparent huge pages: {transparent_huge_pages_mode()}")
def test_an_arena_is_backed_by_huge_pages_where_linux_grants_them():
    arena = HugePageArena(4 * HUGE_PAGE_BYTES)
    arena.copy(torch.ones(4 * HUGE_PAGE_BYTES, dtype=torch.uint8))
    assert _anon_huge_kib(arena.data_ptr) >= HUGE_PAGE_BYTES // 1024

