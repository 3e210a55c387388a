"""Reference-counted allocation of fixed-size KV cache blocks, with an optional prefix cache."""

from __future__ import annotations

from collections import deque

from hearth.engine.scheduling.prefix_cache import PrefixCache


class OutOfBlocksError(RuntimeError):
    """No free KV cache block is left."""


class BlockAllocator:
    """Blocks are shared by forked sequences (n choices share their prompt) and by sequences reusing a
    cached prefix. At refcount 0 a block goes back to the free list, or, when the prefix cache holds it,
    stays cached until allocate() needs it (free blocks first, then the least recently used cached one).
    """

    def __init__(self, num_blocks: int, prefix_cache: PrefixCache | None = None) -> None:
        if num_blocks < 1:
            raise ValueError(f"num_blocks must be >= 1, got {num_blocks}")
        self.num_blocks = num_blocks
        self.prefix_cache = prefix_cache
        self._free: deque[int] = deque(range(num_blocks))
        self._ref_counts = [0] * num_blocks

    @property
    def num_free(self) -> int:
        """Blocks allocate() can hand out: free ones and unreferenced cached ones."""
        return len(self._free) + (self.prefix_cache.num_evictable if self.prefix_cache else 0)

    def ref_count(self, block: int) -> int:
        return self._ref_counts[block]

    def allocate(self) -> int:
        if self._free:
            block = self._free.popleft()
        elif self.prefix_cache is not None and self.prefix_cache.num_evictable:
            block = self.prefix_cache.evict()
        else:
            raise OutOfBlocksError("no free KV cache block")
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
            if self.prefix_cache is not None and self.prefix_cache.is_cached(block):
                self.prefix_cache.park(block)
            else:
                self._free.append(block)

    def free_all(self, blocks: list[int]) -> None:
        # Last block first: a sequence's tail is parked (and so evicted) before the prefix it extends.
        for block in reversed(blocks):
            self.free(block)

    # ---- prefix cache ---------------------------------------------------------------------------

    def num_parked(self, blocks: list[int]) -> int:
        """How many of `blocks` are unreferenced: reusing them takes that many from num_free."""
        return sum(self._ref_counts[b] == 0 for b in blocks)

    def reuse(self, block: int) -> int:
        """Take a reference to a cached block, held or parked."""
        if self._ref_counts[block] == 0:
            self.prefix_cache.unpark(block)
        self._ref_counts[block] += 1
        return block
