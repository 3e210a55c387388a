"""Automatic prefix caching: full KV blocks found again by a hash of everything before and in them.

A block's hash chains its parent's hash with its own token ids (vLLM's automatic prefix caching), so
equal hashes mean equal token prefixes up to the block's end and, for the blocks registered here, equal
keys and values. Cached blocks that no sequence holds stay out of the allocator's free list, ordered by
when they were last released, and are evicted least recently used first only when a block is needed.

Partial blocks: where a token's keys and values do not depend on how its sequence was cut or batched
(hearth.engine.scheduling.scheduler, has_batch_invariant_kv), a finished sequence's last, partly filled block is
kept too, under its parent's hash and its tokens. A later sequence that shares the blocks before it and
some of its first tokens, but not a whole block, copies it (or a full cached block after the same parent
that shares those tokens) instead of computing them again: a chat's next turn then computes only what is
new. Partial blocks are parked, reused and evicted like full ones.
"""

from __future__ import annotations

import hashlib
from array import array
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hearth.engine.scheduling.sequence import Sequence as Seq

# 128-bit digests: an accidental collision (which would serve another prefix's KV) is out of reach.
DIGEST_SIZE = 16
ROOT_HASH = b""
# Partial blocks' digests are hashed in their own domain: no full block's hash chain can name one.
PARTIAL_DOMAIN = b"partial block:"


def block_hash(parent: bytes, token_ids: Sequence[int]) -> bytes:
    """The hash of a full block: blake2b over its parent's hash and its tokens as int64."""
    digest = hashlib.blake2b(parent, digest_size=DIGEST_SIZE)
    digest.update(array("q", token_ids).tobytes())
    return digest.digest()


def extend_hashes(hashes: list[bytes], token_ids: Sequence[int], block_size: int, num_blocks: int) -> list[bytes]:
    """Grow `hashes` (the chain of the first len(hashes) blocks of token_ids) to num_blocks; returns it."""
    while len(hashes) < num_blocks:
        index = len(hashes)
        parent = hashes[-1] if hashes else ROOT_HASH
        hashes.append(block_hash(parent, token_ids[index * block_size:(index + 1) * block_size]))
    return hashes


class PrefixCache:
    """block hash <-> block id of the cached blocks, and the LRU order of those no sequence holds.

    Invariant: a block is in `_evictable` only while cached and unreferenced; the allocator parks a
    cached block there when its last reference goes and takes it out when a sequence reuses it.
    """

    def __init__(self) -> None:
        self._blocks: dict[bytes, int] = {}
        self._hashes: dict[int, bytes] = {}
        self._evictable: OrderedDict[int, None] = OrderedDict()
        # Cached blocks, full and partial, by their parent's hash: block -> its tokens; and each one's parent.
        self._children: dict[bytes, dict[int, tuple[int, ...]]] = {}
        self._parents: dict[int, bytes] = {}
        # Prompt tokens looked up at a sequence's first admission, and how many of them were reused.
        self.num_queried_tokens = 0
        self.num_hit_tokens = 0

    @property
    def num_cached(self) -> int:
        return len(self._hashes)

    @property
    def num_evictable(self) -> int:
        return len(self._evictable)

    @property
    def hit_rate(self) -> float:
        return self.num_hit_tokens / self.num_queried_tokens if self.num_queried_tokens else 0.0

    def is_cached(self, block: int) -> bool:
        return block in self._hashes

    def match(self, hashes: Sequence[bytes]) -> list[int]:
        """Blocks of the longest cached prefix of the chain `hashes`."""
        blocks = []
        for digest in hashes:
            block = self._blocks.get(digest)
            if block is None:
                break
            blocks.append(block)
        return blocks

    def find(self, seq: Seq, block_size: int) -> list[int]:
        """Blocks that `seq`, with nothing computed, reuses: its longest cached prefix in whole blocks, short of
        its last token, whose logits it needs."""
        num_blocks = (seq.num_tokens - 1) // block_size
        if num_blocks == 0:
            return []
        extend_hashes(seq.block_hashes, seq.token_ids, block_size, num_blocks)
        return self.match(seq.block_hashes[:num_blocks])

    def add_blocks(self, seq: Seq, first: int, last: int, block_size: int) -> None:
        """Register blocks [first, last) of seq's block table, full and computed, under their hashes."""
        token_ids = seq.token_ids
        extend_hashes(seq.block_hashes, token_ids, block_size, last)
        for index in range(first, last):
            if self.add(seq.block_hashes[index], seq.block_table[index]):
                self._add_child(seq.block_hashes[index - 1] if index else ROOT_HASH, seq.block_table[index],
                                token_ids[index * block_size:(index + 1) * block_size])

    def add(self, digest: bytes, block: int) -> bool:
        """Register a block a sequence holds under `digest`; False when the hash or the block is already cached
        (two sequences computed the same prefix at once: the first copy stays the cached one)."""
        if digest in self._blocks or block in self._hashes:
            return False
        self._blocks[digest] = block
        self._hashes[block] = digest
        return True

    def add_partial(self, parent: bytes, token_ids: Sequence[int], block: int) -> bool:
        """Register a partly filled block a sequence holds, whose first len(token_ids) slots hold those tokens'
        keys and values after the chain `parent`; False when the block or an identical partial is cached."""
        if not self.add(block_hash(PARTIAL_DOMAIN + parent, token_ids), block):
            return False
        self._add_child(parent, block, token_ids)
        return True

    def _add_child(self, parent: bytes, block: int, token_ids: Sequence[int]) -> None:
        self._children.setdefault(parent, {})[block] = tuple(token_ids)
        self._parents[block] = parent

    def find_partial(self, parent: bytes, token_ids: Sequence[int]) -> tuple[int, int] | None:
        """(block, n): the cached block, full or partial, after the chain `parent` whose tokens share the
        longest prefix, n >= 1 tokens, with token_ids; None when none shares any."""
        best = None
        for block, tokens in self._children.get(parent, {}).items():
            n = 0
            for mine, theirs in zip(tokens, token_ids):
                if mine != theirs:
                    break
                n += 1
            if n and (best is None or n > best[1]):
                best = (block, n)
        return best

    def park(self, block: int) -> None:
        """The cached block's last reference went: it is evictable, most recently used."""
        self._evictable[block] = None

    def unpark(self, block: int) -> None:
        del self._evictable[block]

    def evict(self) -> int:
        """Forget the least recently released cached block and return it, unreferenced, for reuse."""
        block, _ = self._evictable.popitem(last=False)
        del self._blocks[self._hashes.pop(block)]
        parent = self._parents.pop(block, None)  # None: registered by add() alone
        if parent is not None:
            del self._children[parent][block]
            if not self._children[parent]:
                del self._children[parent]
        return block
