"""Reference-counted allocation of fixed-size KV cache blocks."""

from __future__ import annotations

from collections import deque


class OutOfBlocksError(RuntimeError):
    """No free KV cache block is left."""


class BlockAllocator:
    """Blocks are shared by forked sequences (n choices share their prompt) and freed at refcount 0."""

    def __init__(self, num_blocks: int) -> None:
        if num_blocks < 1:
            raise ValueError(f"num_blocks must be >= 1, got {num_blocks}")
        self.num_blocks = num_blocks
        self._free: deque[int] = deque(range(num_blocks))
        self._ref_counts = [0] * num_blocks

    @property
    def num_free(self) -> int:
        return len(self._free)

    def ref_count(self, block: int) -> int:
        return self._ref_counts[block]

    def allocate(self) -> int:
        if not self._free:
            raise OutOfBlocksError("no free KV cache block")
        block = self._free.popleft()
        self._ref_counts[block] = 1
        return block

    def share(self, block: int) -> int:
        if self._ref_counts[block] < 1:
            raise ValueError(f"block {block} is not allocated")
        self._ref_counts[block] += 1
        return block

    def free(self, block: int) -> None:
        if self._ref_counts[block] < 1:
            raise ValueError(f"block {block} is freed twice")
        self._ref_counts[block] -= 1
        if self._ref_counts[block] == 0:
            self._free.append(block)

    def free_all(self, blocks: list[int]) -> None:
        for block in reversed(blocks):
            self.free(block)
