"""The scheduler: which sequences run in the next step, and how many of their tokens.

Each step first continues the running sequences in admission order (one token for a decode, the next
prefill chunk otherwise), then admits waiting ones while the token budget, sequence slots and KV blocks
allow. Prefill chunks never cross a multiple of prefill_chunk_size, and each is computed in the geometry
of the whole chunk it lies in (hearth.engine.model.attention), so a token's keys and values do not depend on
where its prompt was cut. When a running sequence needs a block and none is free, the most recently
admitted sequence not yet scheduled this step is preempted: its blocks are freed and it waits at the head
of the queue to be recomputed (prompt and output so far). Nothing is dropped.

Prefix caching (when the allocator has a prefix cache): a sequence admitted with nothing computed
reuses the longest cached prefix of its tokens in whole blocks, short of its last token, whose logits
must be computed. Every full block that prefill computed is cached, the prompt's short last chunk
included, so the next turn of a conversation reuses its whole previous prompt. Decode steps compute
another way (one row, its exact context) and their blocks are not cached. The first chunk is the
exception to the whole-chunk geometry (it is computed over its own rows, as transformers computes a
short prompt): it is cached only when full, and a prompt shorter than one chunk reuses nothing.
Where the model computes every row on its own (has_batch_invariant_kv: its weight format's hits end at any
token, PrefixHits.ANY_TOKEN in hearth.engine.model.formats, and every layer packed), none of this applies: a
token's keys and values are the same however its sequence was cut or batched, decode steps included, so
every full block is cached, the previous answer's too, and any cached block is reused. A finished
sequence's last, partly filled block is cached as well (PrefixCache partial blocks), and a sequence that
shares some of its first tokens starts from a copy of it: a chat's next turn computes only its new tokens.
A waiting sequence whose next uncached block a running sequence's prefill is computing right now waits
for it (admission skips it, keeping its place): requests that arrive together with one system prompt
compute it once instead of each computing it before any has cached it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from hearth.engine.scheduling.block_allocator import BlockAllocator
from hearth.engine.scheduling.prefix_cache import ROOT_HASH, extend_hashes
from hearth.engine.scheduling.sequence import Sequence, SequenceStatus


@dataclass(frozen=True)
class SchedulerConfig:
    max_num_seqs: int
    max_num_batched_tokens: int
    prefill_chunk_size: int
    block_size: int
    # Blocks kept free at admission so running sequences can grow without preempting at once.
    num_watermark_blocks: int = 0
    # A token's keys and values are the same however its sequence was cut into chunks or batched, decode
    # steps included (every row computed alone).
    has_batch_invariant_kv: bool = False

    def __post_init__(self) -> None:
        if self.prefill_chunk_size < 1:
            raise ValueError(f"prefill_chunk_size must be >= 1, got {self.prefill_chunk_size}")
        if self.block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {self.block_size}")
        if self.max_num_batched_tokens < self.prefill_chunk_size:
            raise ValueError(
                f"max_num_batched_tokens must be >= prefill_chunk_size ({self.prefill_chunk_size}), "
                f"got {self.max_num_batched_tokens}"
            )


@dataclass(frozen=True)
class ScheduledChunk:
    seq: Sequence
    # Tokens [start, start + num_tokens) of the sequence are computed this step.
    start: int
    num_tokens: int

    @property
    def is_decode(self) -> bool:
        """One output token after the sequence's computed ones: attended as a decode row, not a prefill
        chunk (a one-token prompt chunk is still a prefill chunk)."""
        return self.num_tokens == 1 and self.start >= self.seq.num_prompt_tokens

    @property
    def is_sampled(self) -> bool:
        """The chunk reaches the end of the sequence, so its last position yields the next token."""
        return self.start + self.num_tokens == self.seq.num_tokens


@dataclass
class SchedulerOutput:
    chunks: list[ScheduledChunk] = field(default_factory=list)
    # (src, dst) block copies to run before the forward (copy-on-write of shared blocks).
    block_copies: list[tuple[int, int]] = field(default_factory=list)
    preempted: list[Sequence] = field(default_factory=list)

    @property
    def num_tokens(self) -> int:
        return sum(c.num_tokens for c in self.chunks)


class Scheduler:
    def __init__(self, config: SchedulerConfig, allocator: BlockAllocator) -> None:
        self.config = config
        self.allocator = allocator
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self._free_slots: deque[int] = deque(range(config.max_num_seqs))
        # Slots held for the choices a sequence forks when its prompt is prefilled.
        self.reserved_slots: dict[int, list[int]] = {}
        # Cached blocks being copied this step (a hit ending inside them): referenced until the copy has run.
        self._pinned: list[int] = []

    @property
    def num_free_slots(self) -> int:
        return len(self._free_slots)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def add(self, seq: Sequence) -> None:
        seq.status = SequenceStatus.WAITING
        self.waiting.append(seq)

    def _chunk_tokens(self, seq: Sequence, start: int) -> int:
        """Tokens of the prefill chunk starting at `start`: up to the sequence's end or the next multiple of
        prefill_chunk_size, whichever comes first."""
        chunk_size = self.config.prefill_chunk_size
        return min(seq.num_tokens - start, (start // chunk_size + 1) * chunk_size - start)

    def _num_new_tokens(self, seq: Sequence) -> int:
        return self._chunk_tokens(seq, seq.num_computed_tokens)

    def _find_cached(self, seq: Sequence) -> list[int]:
        cache = self.allocator.prefix_cache
        if cache is None or self._first_chunk_is_uncacheable(seq.num_tokens):
            return []
        return cache.find(seq, self.config.block_size)

    def _find_partial(self, seq: Sequence, num_hit_blocks: int) -> tuple[int, int] | None:
        """(cached block, n): the first n tokens after `seq`'s hit blocks are the start of that block (a partial
        one, or a full one `seq` shares only in part), short of its last token; None when hits do not end
        inside blocks here (has_batch_invariant_kv) or no cached block shares a token."""
        cache = self.allocator.prefix_cache
        if cache is None or not self.config.has_batch_invariant_kv:
            return None
        size = self.config.block_size
        start = num_hit_blocks * size
        parent = seq.block_hashes[num_hit_blocks - 1] if num_hit_blocks else ROOT_HASH
        return cache.find_partial(parent, seq.tokens_between(start, min(start + size, seq.num_tokens - 1)))

    def _first_chunk_is_uncacheable(self, num_tokens: int) -> bool:
        """A first chunk of num_tokens (< prefill_chunk_size) is computed over its own rows, unlike the cached
        ones, unless each row is computed alone (has_batch_invariant_kv)."""
        return num_tokens < self.config.prefill_chunk_size and not self.config.has_batch_invariant_kv

    def _blocks_needed(self, seq: Sequence, num_new: int) -> int:
        size = self.config.block_size
        total = -(-(seq.num_computed_tokens + num_new) // size)
        needed = total - len(seq.block_table)
        if seq.num_computed_tokens % size and seq.block_table and self.allocator.ref_count(seq.block_table[-1]) > 1:
            needed += 1
        return needed

    def _allocate(self, seq: Sequence, num_new: int, copies: list[tuple[int, int]]) -> None:
        size = self.config.block_size
        if seq.num_computed_tokens % size and seq.block_table and self.allocator.ref_count(seq.block_table[-1]) > 1:
            shared = seq.block_table[-1]
            private = self.allocator.allocate()
            copies.append((shared, private))
            self.allocator.free(shared)
            seq.block_table[-1] = private
        total = -(-(seq.num_computed_tokens + num_new) // size)
        while len(seq.block_table) < total:
            seq.block_table.append(self.allocator.allocate())

    def _start_from_cache(self, seq: Sequence, hit: list[int], partial: tuple[int, int] | None,
                          copies: list[tuple[int, int]]) -> None:
        seq.block_table = [self.allocator.reuse(b) for b in hit]
        num_reused = len(hit) * self.config.block_size
        if partial is not None:
            source, num_tokens = partial
            # Referenced before allocating the copy, so that allocate() cannot evict it; freed after the step.
            self._pinned.append(self.allocator.reuse(source))
            copy = self.allocator.allocate()
            copies.append((source, copy))
            seq.block_table.append(copy)
            num_reused += num_tokens
        seq.num_computed_tokens = seq.num_cacheable_tokens = num_reused
        cache = self.allocator.prefix_cache
        if seq.num_cached_tokens is None:
            seq.num_cached_tokens = seq.num_computed_tokens
            if cache is not None:
                cache.num_queried_tokens += seq.num_prompt_tokens
                cache.num_hit_tokens += seq.num_cached_tokens

    def _preempt(self, seq: Sequence, out: SchedulerOutput) -> None:
        self.allocator.free_all(seq.block_table)
        seq.block_table = []
        seq.num_computed_tokens = seq.num_cacheable_tokens = 0
        seq.status = SequenceStatus.WAITING
        self.running.remove(seq)
        self.waiting.appendleft(seq)
        out.preempted.append(seq)

    def _release_pinned(self) -> None:
        for block in self._pinned:
            self.allocator.free(block)
        self._pinned.clear()

    def schedule(self) -> SchedulerOutput:
        self._release_pinned()  # a step that failed before record_computed
        out = SchedulerOutput()
        budget = self.config.max_num_batched_tokens
        scheduled: set[int] = set()
        for seq in list(self.running):
            if seq.status is not SequenceStatus.RUNNING:
                continue  # preempted earlier in this loop
            num_new = self._num_new_tokens(seq)
            if num_new > budget:
                continue
            while self._blocks_needed(seq, num_new) > self.allocator.num_free:
                victims = [s for s in reversed(self.running) if s.seq_id not in scheduled and s is not seq]
                self._preempt(victims[0] if victims else seq, out)
                if not victims:
                    break
            if seq.status is not SequenceStatus.RUNNING:
                continue
            self._allocate(seq, num_new, out.block_copies)
            out.chunks.append(ScheduledChunk(seq, seq.num_computed_tokens, num_new))
            scheduled.add(seq.seq_id)
            budget -= num_new

        pending = self._pending_blocks()
        deferred: list[Sequence] = []
        while self.waiting and budget > 0:
            seq = self.waiting[0]  # nothing computed, no blocks
            hit = self._find_cached(seq)
            if len(seq.block_hashes) > len(hit) and seq.block_hashes[len(hit)] in pending:
                deferred.append(self.waiting.popleft())
                continue
            partial = self._find_partial(seq, len(hit))
            start = len(hit) * self.config.block_size + (partial[1] if partial else 0)
            num_new = self._chunk_tokens(seq, start)
            num_slots = 0 if seq.slot is not None else 1 + seq.num_pending_forks
            if num_new > budget or num_slots > self.num_free_slots:
                break
            # Reusing an unreferenced cached block takes it from num_free too. The watermark keeps room for
            # running sequences to grow; an idle engine admits up to the last block.
            needed = (self.allocator.num_parked(hit + ([partial[0]] if partial else []))
                      + -(-(start + num_new) // self.config.block_size) - len(hit)
                      + (self.config.num_watermark_blocks if self.running else 0))
            if needed > self.allocator.num_free:
                break
            self.waiting.popleft()
            if seq.slot is None:
                seq.slot = self._free_slots.popleft()
                self.reserved_slots[seq.seq_id] = [self._free_slots.popleft() for _ in range(seq.num_pending_forks)]
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            self._start_from_cache(seq, hit, partial, out.block_copies)
            self._allocate(seq, num_new, out.block_copies)
            out.chunks.append(ScheduledChunk(seq, seq.num_computed_tokens, num_new))
            scheduled.add(seq.seq_id)
            budget -= num_new
            pending |= self._blocks_to_cache(seq)
        self.waiting.extendleft(reversed(deferred))
        self._add_prefill_chunks(out, budget)
        return out

    def _blocks_to_cache(self, seq: Sequence) -> set[bytes]:
        """Hashes of the prompt blocks `seq` will cache when its prefill computes them (none when caching is
        off or its first chunk is not cached: a short prompt over its own rows)."""
        size = self.config.block_size
        if (self.allocator.prefix_cache is None or seq.num_computed_tokens >= seq.num_prompt_tokens
                or self._first_chunk_is_uncacheable(seq.num_prompt_tokens)):
            return set()
        return set(seq.block_hashes[seq.num_cacheable_tokens // size:seq.num_prompt_tokens // size])

    def _pending_blocks(self) -> set[bytes]:
        """Prompt blocks the running sequences' prefills are computing and will cache."""
        return set().union(*(self._blocks_to_cache(seq) for seq in self.running))

    def _add_prefill_chunks(self, out: SchedulerOutput, budget: int) -> None:
        """Spend the budget left on further chunks of the prompts prefilling this step, earliest admitted
        first: a step's rows are one batch, so a lone long prompt runs in large GEMMs while its chunks keep
        their fixed boundaries (1,000 tokens in 128-token chunks: 1.0 s instead of 2.0 s in one chunk per
        step, one thread here). Never preempts."""
        size = self.config.block_size
        watermark = self.config.num_watermark_blocks if len(self.running) > 1 else 0
        ends = {c.seq.seq_id: (c.seq, c.start + c.num_tokens) for c in out.chunks if not c.is_sampled}
        for seq, end in ends.values():
            while end < seq.num_tokens:
                num_new = self._chunk_tokens(seq, end)
                needed = -(-(end + num_new) // size) - len(seq.block_table)
                if num_new > budget or needed + watermark > self.allocator.num_free:
                    return
                seq.block_table.extend(self.allocator.allocate() for _ in range(needed))
                out.chunks.append(ScheduledChunk(seq, end, num_new))
                end += num_new
                budget -= num_new

    def record_computed(self, chunks: list[ScheduledChunk]) -> None:
        """After a step's forward ran `chunks`: advance their sequences, and cache the full blocks that prefill
        chunks completed (their keys and values are now in the KV cache), and those decode steps completed
        where they compute as prefill does (has_batch_invariant_kv)."""
        size = self.config.block_size
        for chunk in chunks:
            seq = chunk.seq
            seq.num_computed_tokens += chunk.num_tokens
            if chunk.start != seq.num_cacheable_tokens or (chunk.is_decode and not self.config.has_batch_invariant_kv):
                continue
            if chunk.start == 0 and self._first_chunk_is_uncacheable(chunk.num_tokens):
                continue
            first = seq.num_cacheable_tokens // size
            seq.num_cacheable_tokens = chunk.start + chunk.num_tokens
            last = seq.num_cacheable_tokens // size
            if self.allocator.prefix_cache is not None and last > first:
                self.allocator.prefix_cache.add_blocks(seq, first, last, size)
        self._release_pinned()  # the step's copies have run

    def _cache_partial_block(self, seq: Sequence) -> None:
        """Cache a finishing sequence's last, partly filled block (has_batch_invariant_kv), when it alone holds
        it and every computed token in it is cacheable."""
        cache, size = self.allocator.prefix_cache, self.config.block_size
        index, num_tokens = divmod(seq.num_computed_tokens, size)
        if (cache is None or not self.config.has_batch_invariant_kv or num_tokens == 0
                or seq.num_cacheable_tokens != seq.num_computed_tokens or len(seq.block_table) <= index
                or self.allocator.ref_count(seq.block_table[index]) != 1):
            return
        hashes = extend_hashes(seq.block_hashes, seq.token_ids, size, index)
        parent = hashes[index - 1] if index else ROOT_HASH
        cache.add_partial(parent, seq.tokens_between(index * size, seq.num_computed_tokens), seq.block_table[index])

    def fork(self, parent: Sequence, child: Sequence) -> None:
        """Child shares the parent's blocks (its prompt) and takes one of the parent's reserved slots."""
        child.block_table = [self.allocator.share(b) for b in parent.block_table]
        child.block_hashes = list(parent.block_hashes)
        child.num_cacheable_tokens = parent.num_cacheable_tokens
        child.num_cached_tokens = parent.num_cached_tokens
        child.num_computed_tokens = parent.num_computed_tokens
        child.slot = self.reserved_slots[parent.seq_id].pop()
        child.status = SequenceStatus.RUNNING
        self.running.append(child)

    def finish(self, seq: Sequence) -> list[int]:
        """Free the sequence's blocks; returns the sampler slots it held (now free again)."""
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        self._cache_partial_block(seq)
        self.allocator.free_all(seq.block_table)
        seq.block_table = []
        seq.status = SequenceStatus.FINISHED
        slots = ([seq.slot] if seq.slot is not None else []) + self.reserved_slots.pop(seq.seq_id, [])
        seq.slot = None
        self._free_slots.extend(slots)
        return slots
