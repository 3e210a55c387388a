"""Scheduler and allocator together, without a model."""

from __future__ import annotations

import random

import pytest

from hearth.engine.sampling.sampling_params import SamplingParams
from hearth.engine.scheduling.block_allocator import BlockAllocator
from hearth.engine.scheduling.prefix_cache import PrefixCache
from hearth.engine.scheduling.scheduler import Scheduler, SchedulerConfig
from hearth.engine.scheduling.sequence import Sequence, SequenceStatus

BLOCK = 4


def make_scheduler(num_blocks=64, max_num_seqs=8, budget=32, chunk=16, watermark=0, is_caching=False,
                   is_batch_invariant=False):
    config = SchedulerConfig(max_num_seqs=max_num_seqs, max_num_batched_tokens=budget, prefill_chunk_size=chunk,
                             block_size=BLOCK, num_watermark_blocks=watermark, has_batch_invariant_kv=is_batch_invariant)
    return Scheduler(config, BlockAllocator(num_blocks, PrefixCache() if is_caching else None))


_ids = iter(range(1, 10**9))


def make_seq(prompt_len=10, n=1, max_tokens=100, prompt=None):
    prompt = list(range(prompt_len)) if prompt is None else prompt
    seq = Sequence(seq_id=next(_ids), request_id="r", choice_index=0, prompt_token_ids=prompt,
                   params=SamplingParams(n=n), stream_key=0, max_tokens=max_tokens, detokenizer=None)
    seq.num_pending_forks = n - 1
    return seq


def run_step(scheduler, out, token=7):
    """What the engine does after a step: count computed tokens, append a token to sampled sequences."""
    scheduler.record_computed(out.chunks)
    for chunk in out.chunks:
        if chunk.is_sampled:
            chunk.seq.output_token_ids.append(token)


def test_prefill_is_chunked_at_fixed_boundaries_then_decodes():
    scheduler = make_scheduler(chunk=16, budget=32)
    seq = make_seq(prompt_len=40)
    scheduler.add(seq)
    steps = []
    for _ in range(4):
        out = scheduler.schedule()
        steps.append([(c.start, c.num_tokens, c.is_sampled) for c in out.chunks])
        run_step(scheduler, out)
    # As many whole chunks of a prompt as the token budget takes in one step.
    assert steps[:2] == [[(0, 16, False), (16, 16, False)], [(32, 8, True)]]
    assert steps[2:] == [[(40, 1, True)], [(41, 1, True)]]
    assert len(seq.block_table) == -(-(seq.num_computed_tokens) // BLOCK)


def test_prefill_chunks_fill_the_budget_left_after_decodes_and_admissions():
    scheduler = make_scheduler(chunk=8, budget=32)
    first = make_seq(prompt_len=4)
    scheduler.add(first)
    run_step(scheduler, scheduler.schedule())
    second, third = make_seq(prompt_len=40), make_seq(prompt_len=20)
    scheduler.add(second)
    scheduler.add(third)
    out = scheduler.schedule()
    chunks = [(c.seq, c.start, c.num_tokens) for c in out.chunks]
    # The decode and a chunk of each admitted prompt first, then the earliest admitted prompt's next
    # chunks while whole ones fit (7 tokens of budget are left: not a chunk).
    assert chunks == [(first, 4, 1), (second, 0, 8), (third, 0, 8), (second, 8, 8)]


def test_token_budget_and_max_num_seqs_limit_admission():
    scheduler = make_scheduler(max_num_seqs=2, budget=32, chunk=16)
    seqs = [make_seq(prompt_len=16) for _ in range(3)]
    for seq in seqs:
        scheduler.add(seq)
    out = scheduler.schedule()
    assert [c.seq for c in out.chunks] == seqs[:2]
    assert seqs[2].status is SequenceStatus.WAITING
    run_step(scheduler, out)
    scheduler.finish(seqs[0])
    out = scheduler.schedule()
    assert seqs[2] in [c.seq for c in out.chunks]


def test_n_choices_reserve_slots_and_share_prompt_blocks():
    scheduler = make_scheduler(max_num_seqs=3)
    parent = make_seq(prompt_len=10, n=3)
    scheduler.add(parent)
    out = scheduler.schedule()
    assert scheduler.num_free_slots == 0
    run_step(scheduler, out)
    children = [make_seq(prompt_len=10) for _ in range(2)]
    for child in children:
        scheduler.fork(parent, child)
    assert all(child.block_table == parent.block_table for child in children)
    assert scheduler.allocator.ref_count(parent.block_table[0]) == 3
    # The shared partial last block is copied before anyone writes into it.
    for child in children:
        child.output_token_ids.append(1)
    out = scheduler.schedule()
    assert len(out.block_copies) == 2
    assert len({tuple(s.block_table) for s in [parent, *children]}) == 3


def test_preemption_when_blocks_run_out_and_recompute_later():
    scheduler = make_scheduler(num_blocks=6, budget=64, chunk=16)
    first, second = make_seq(prompt_len=8), make_seq(prompt_len=8)
    scheduler.add(first)
    scheduler.add(second)
    preempted = []
    for _ in range(20):
        out = scheduler.schedule()
        preempted += out.preempted
        run_step(scheduler, out)
    assert second in preempted  # the later one gives way
    assert first.status is SequenceStatus.RUNNING
    assert second.num_computed_tokens == 0 or second.status is SequenceStatus.RUNNING
    scheduler.finish(first)
    for _ in range(3):
        run_step(scheduler, scheduler.schedule())
    assert second.status is SequenceStatus.RUNNING and second.num_computed_tokens > 0


def test_a_lone_sequence_that_cannot_grow_preempts_itself_not_crash():
    scheduler = make_scheduler(num_blocks=3, budget=64, chunk=16)
    seq = make_seq(prompt_len=8)
    scheduler.add(seq)
    for _ in range(6):
        out = scheduler.schedule()
        run_step(scheduler, out)
    assert seq.status in (SequenceStatus.WAITING, SequenceStatus.RUNNING)


class FakeKV:
    """What a forward would leave in each block slot: (token, family that wrote it, in whole-chunk geometry?).

    Checks, for every scheduled chunk, that it is a decode or stays within one chunk, that the whole
    context holds the sequence's own tokens (a hit never reads a stale, evicted or foreign block), and that
    what another family wrote, which the sequence reuses through the prefix cache, was computed by prefill
    in whole-chunk geometry (hearth.engine.model.attention): not by a decode, nor by a first chunk shorter than a
    chunk, unless every row computes alone (is_batch_invariant: any writer's keys and values are the same)."""

    def __init__(self, chunk_size, is_batch_invariant=False):
        self.chunk_size = chunk_size
        self.is_batch_invariant = is_batch_invariant
        self.slots: dict[int, dict[int, tuple[int, int, bool]]] = {}
        self.family: dict[int, int] = {}

    def run(self, out):
        for src, dst in out.block_copies:
            self.slots[dst] = dict(self.slots.get(src, {}))
        for chunk in out.chunks:
            seq, table = chunk.seq, chunk.seq.block_table
            family = self.family.setdefault(seq.seq_id, seq.seq_id)
            last = chunk.start + chunk.num_tokens - 1
            assert chunk.is_decode or chunk.start // self.chunk_size == last // self.chunk_size
            is_whole_chunk = not chunk.is_decode and not (chunk.start == 0 and chunk.num_tokens < self.chunk_size)
            for pos in range(chunk.start + chunk.num_tokens):
                if pos >= chunk.start:
                    self.slots.setdefault(table[pos // BLOCK], {})[pos % BLOCK] = (seq.token_at(pos), family,
                                                                                    is_whole_chunk)
                token, writer, is_whole_chunk_written = self.slots[table[pos // BLOCK]][pos % BLOCK]
                assert token == seq.token_at(pos)
                assert writer == family or is_whole_chunk_written or self.is_batch_invariant


@pytest.mark.parametrize("is_caching, is_batch_invariant", [(False, False), (True, False), (True, True)],
                         ids=["no-cache", "prefix-cache", "batch-invariant-kv"])
def test_no_leaks_after_random_add_abort_finish_events(is_caching, is_batch_invariant):
    """1,000 random adds, aborts, steps and finishes; prompts drawn from a few shared prefixes, and a KV
    budget far below what the cached prefixes would keep, so hits and evictions happen all along. With
    batch-invariant keys and values, decode blocks and finished sequences' partial blocks are cached too,
    and a hit may copy a partial block."""
    rng = random.Random(0)
    scheduler = make_scheduler(num_blocks=40, max_num_seqs=6, budget=48, chunk=8, watermark=1, is_caching=is_caching,
                               is_batch_invariant=is_batch_invariant)
    allocator, kv = scheduler.allocator, FakeKV(8, is_batch_invariant)
    num_partial_copies = 0
    num_evicted = 0
    if is_caching:
        evict = allocator.prefix_cache.evict

        def counting_evict():
            nonlocal num_evicted
            num_evicted += 1
            return evict()

        allocator.prefix_cache.evict = counting_evict
    prefixes = [[rng.randrange(1000) for _ in range(48)] for _ in range(5)]
    live: list[Sequence] = []
    for _ in range(1000):
        event = rng.random()
        if event < 0.3:
            prompt = rng.choice(prefixes)[:rng.randint(1, 40)] + [rng.randrange(1000) for _ in range(rng.randint(0, 12))]
            seq = make_seq(prompt=prompt, n=rng.choice([1, 1, 2]))
            scheduler.add(seq)
            live.append(seq)
        elif event < 0.45 and live:
            seq = live.pop(rng.randrange(len(live)))
            scheduler.finish(seq)  # abort, waiting or running
        else:
            out = scheduler.schedule()
            num_partial_copies += sum(allocator.prefix_cache is not None and allocator.prefix_cache.is_cached(src)
                                      for src, _ in out.block_copies)
            kv.run(out)
            run_step(scheduler, out)
            for chunk in out.chunks:
                seq = chunk.seq
                if chunk.is_sampled and seq.num_pending_forks:
                    for _ in range(seq.num_pending_forks):
                        child = make_seq(prompt=seq.prompt_token_ids)
                        scheduler.fork(seq, child)
                        kv.family[child.seq_id] = kv.family[seq.seq_id]
                        live.append(child)
                    seq.num_pending_forks = 0
                if seq.num_output_tokens >= rng.randint(1, 12) and seq in live:
                    live.remove(seq)
                    scheduler.finish(seq)
        held = sum(len(s.block_table) for s in scheduler.running)
        refs = [allocator.ref_count(b) for b in range(allocator.num_blocks)]
        assert sum(refs) == held
        # Every block is exactly one of: referenced, free, or cached and unreferenced (both in num_free).
        assert sum(r > 0 for r in refs) + allocator.num_free == allocator.num_blocks
        holders = [s for s in [*scheduler.running, *scheduler.waiting] if s.slot is not None]
        reserved = sum(len(v) for v in scheduler.reserved_slots.values())
        assert len(holders) + reserved + scheduler.num_free_slots == 6
    for seq in live:
        scheduler.finish(seq)
    assert allocator.num_free == allocator.num_blocks
    assert scheduler.num_free_slots == 6
    assert not scheduler.running and not scheduler.waiting
    if is_caching:
        assert allocator.prefix_cache.num_hit_tokens > 0 and num_evicted > 0
    assert (num_partial_copies > 0) == is_batch_invariant
