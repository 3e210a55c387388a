"""Prefix caching: the cache and allocator alone, the scheduler's hits, then the engine.

The engine tests run the tiny random Llama in float32 (GEMM rows batch-invariant on every CPU measured so
far) and compare the logprobs of every generated token, so a hit must give the miss's logits bit for bit,
alone and batched, not just its argmax."""

from __future__ import annotations

import pytest
import torch

from hearth.engine.config import EngineConfig
from hearth.engine.llm_engine import LLMEngine
from hearth.engine.sampling.sampling_params import SamplingParams
from hearth.engine.scheduling.block_allocator import BlockAllocator
from hearth.engine.scheduling.prefix_cache import PrefixCache, extend_hashes
from tests.conftest import C_KERNEL_LEVELS, capped_at
from tests.engine.scheduling.test_scheduler import BLOCK, make_scheduler, make_seq, run_step


def test_block_hashes_chain_the_whole_prefix():
    base = extend_hashes([], list(range(12)), 4, 3)
    assert extend_hashes([], list(range(12)), 4, 3) == base
    changed = extend_hashes([], [99] + list(range(1, 12)), 4, 3)
    # Same tokens in blocks 1 and 2, but after another first block: every hash differs.
    assert all(a != b for a, b in zip(base, changed))


def test_cached_blocks_stay_out_of_the_free_list_until_needed_then_go_least_recently_used():
    cache = PrefixCache()
    allocator = BlockAllocator(3, cache)
    a, b = allocator.allocate(), allocator.allocate()
    cache.add(b"a", a)
    cache.add(b"b", b)
    allocator.free(a)
    allocator.free(b)
    assert allocator.num_free == 3 and cache.num_cached == 2
    assert cache.match([b"a"]) == [a]
    allocator.allocate()  # the never-used block first
    assert cache.num_cached == 2
    assert allocator.allocate() == a  # then the least recently released cached block, forgotten
    assert cache.match([b"a"]) == [] and cache.match([b"b"]) == [b]
    allocator.reuse(b)
    assert allocator.num_free == 0 and allocator.ref_count(b) == 1


def test_partial_blocks_match_the_longest_shared_start_and_go_when_evicted():
    cache = PrefixCache()
    allocator = BlockAllocator(4, cache)
    parent = extend_hashes([], list(range(16)), 16, 1)[0]
    short, long, other = allocator.allocate(), allocator.allocate(), allocator.allocate()
    assert cache.add_partial(parent, [5, 6, 7], short) and cache.add_partial(parent, [5, 6, 8, 9, 10], long)
    assert cache.add_partial(b"another chain", [5, 6, 7, 8], other)
    assert not cache.add_partial(parent, [5, 6, 7], allocator.allocate())  # the same partial twice
    assert cache.find_partial(parent, [5, 6, 8, 9, 1]) == (long, 4)
    assert cache.find_partial(parent, [5, 6, 7, 1]) == (short, 3)
    assert cache.find_partial(parent, [4, 6, 7]) is None  # nothing shared from the first token
    assert cache.match([parent]) == []  # a partial block is never a full block's hit
    for block in (short, long, other):
        allocator.free(block)  # parked, least recently used first
    assert allocator.allocate() == short
    assert cache.find_partial(parent, [5, 6, 7, 1]) == (long, 2)
    assert {allocator.allocate(), allocator.allocate()} == {long, other} and cache.num_cached == 0
    assert cache.find_partial(parent, [5, 6, 8, 9]) is None and cache.find_partial(b"another chain", [5]) is None


def finish_all(scheduler, seqs, max_steps=50):
    for _ in range(max_steps):
        run_step(scheduler, scheduler.schedule())
        if all(s.num_output_tokens for s in seqs):
            return
    raise AssertionError("did not finish prefill")


def test_a_hit_reuses_whole_blocks_that_prefill_computed_short_of_the_last_token():
    scheduler = make_scheduler(chunk=8, budget=32, is_caching=True)
    first = make_seq(prompt_len=20)
    scheduler.add(first)
    finish_all(scheduler, [first])
    for _ in range(6):  # decode steps: their blocks are not cached
        run_step(scheduler, scheduler.schedule())
    # Chunks [0, 8), [8, 16) and the short [16, 20) were prefill: 5 blocks cached; the decodes' were not.
    assert scheduler.allocator.prefix_cache.num_cached == 20 // BLOCK
    scheduler.finish(first)
    starts = {}
    for prompt_len in (20, 16, 8, 30, 6):
        seq = make_seq(prompt_len=prompt_len)
        scheduler.add(seq)
        out = scheduler.schedule()
        starts[prompt_len] = (out.chunks[0].start, out.chunks[0].num_tokens, seq.num_cached_tokens)
        run_step(scheduler, out)
        scheduler.finish(seq)
    # A whole cached prompt recomputes its last block for its logits (20, 16); a hit inside a chunk computes
    # up to the chunk's end (8: [4, 8)); 30 reuses all 5 blocks; 6 is shorter than a chunk: no hit.
    assert starts == {20: (16, 4, 16), 16: (12, 4, 12), 8: (4, 4, 4), 30: (20, 4, 20), 6: (0, 6, 0)}
    cache = scheduler.allocator.prefix_cache
    assert (cache.num_hit_tokens, cache.num_queried_tokens) == (52, 20 + 20 + 16 + 8 + 30 + 6)


def test_a_short_first_chunk_is_not_cached_but_a_short_later_chunk_is():
    scheduler = make_scheduler(chunk=8, budget=32, is_caching=True)
    short = make_seq(prompt_len=7)
    scheduler.add(short)
    finish_all(scheduler, [short])
    assert scheduler.allocator.prefix_cache.num_cached == 0
    longer = make_seq(prompt_len=13)
    scheduler.add(longer)
    finish_all(scheduler, [longer])
    assert scheduler.allocator.prefix_cache.num_cached == 12 // BLOCK


def test_n_choices_fork_from_cached_blocks_and_copy_on_write_their_shared_tail():
    scheduler = make_scheduler(chunk=8, budget=32, is_caching=True)
    first = make_seq(prompt_len=18)
    scheduler.add(first)
    finish_all(scheduler, [first])
    scheduler.finish(first)
    parent = make_seq(prompt_len=18, n=3)
    scheduler.add(parent)
    finish_all(scheduler, [parent])
    assert parent.num_cached_tokens == 16
    children = [make_seq(prompt_len=18) for _ in range(2)]
    for child in children:
        scheduler.fork(parent, child)
        child.output_token_ids.append(1)
    assert scheduler.allocator.ref_count(parent.block_table[0]) == 3
    out = scheduler.schedule()
    assert len(out.block_copies) == 2  # the shared partial block [16, 18) + the parent's output token
    for seq in [parent, *children]:
        scheduler.finish(seq)
    assert scheduler.allocator.num_free == scheduler.allocator.num_blocks


def test_requests_arriving_together_compute_a_shared_prefix_once():
    scheduler = make_scheduler(chunk=16, budget=64, is_caching=True)
    shared = list(range(100, 148))  # three blocks
    first, second, other = (make_seq(prompt=shared + [1, 2, 3]), make_seq(prompt=shared + [4, 5]),
                            make_seq(prompt=list(range(500, 530))))
    for seq in (first, second, other):
        scheduler.add(seq)
    out = scheduler.schedule()
    # `second` waits for the blocks `first` is computing; `other` (nothing shared) is admitted behind it.
    assert {c.seq.seq_id for c in out.chunks} == {first.seq_id, other.seq_id} and list(scheduler.waiting) == [second]
    assert sum(c.num_tokens for c in out.chunks if c.seq is first) == 48  # the three shared blocks
    run_step(scheduler, out)
    out = scheduler.schedule()
    assert [(c.seq, c.start) for c in out.chunks if c.seq is second] == [(second, 48)]
    assert second.num_cached_tokens == 48
    # Without caching nothing waits.
    plain = make_scheduler(chunk=16, budget=64)
    for seq in (make_seq(prompt=shared + [1]), make_seq(prompt=shared + [2])):
        plain.add(seq)
    plain.schedule()
    assert not plain.waiting


# ---- the engine -------------------------------------------------------------------------------

TEXT = (
    "The lighthouse stood on a narrow spit of rock at the edge of the bay, and for forty years the same family "
    "had kept its lamp burning through storms and calm nights alike. Every evening the keeper climbed the "
    "spiral stairs, trimmed the wick, polished the great lens and wrote the weather in a leather book. Ships "
    "passed far out on the grey water, their lights blinking back like distant stars, and the keeper counted "
    "them as other people count sheep. One winter a bottle washed up among the kelp, sealed with red wax. "
)
OTHER = "Bananas are berries, but strawberries are not; botanists define fruit by the flower it grows from. " * 3
GREEDY = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True, logprobs=True, top_logprobs=2)
SEEDED = SamplingParams(temperature=1.0, seed=11, max_tokens=6, ignore_eos=True, logprobs=True, top_logprobs=2)
BLOCK_BYTES = 2 * 2 * 16 * 2 * 16 * 4  # tiny Llama: 2 layers, k and v, 16 tokens, 2 kv heads x 16, float32


@pytest.fixture(scope="module")
def engines(tiny_entry):
    """Caching on and off over one model; 16-token chunks and blocks, so a hit can be one block."""
    config = dict(model_path=str(tiny_entry.path), dtype="float32", prefill_chunk_size=16, max_num_batched_tokens=64,
                  max_num_seqs=8, kv_cache_memory_gib=256 * BLOCK_BYTES / 2**30)
    on = LLMEngine(EngineConfig(**config), tiny_entry)
    off = LLMEngine(EngineConfig(**config, enable_prefix_caching=False), loaded=on.loaded)
    return on, off


def run(engine, requests):
    """requests: id -> (prompt, params), added at once; returns id -> ((token, logprob, top) per token, cached)."""
    for request_id, (prompt, params) in requests.items():
        engine.add_request(request_id, prompt, params)
    tokens = {rid: [] for rid in requests}
    cached = {}
    while engine.has_unfinished_requests():
        for output in engine.step():
            (delta,) = output.choices
            tokens[output.request_id] += [(r.token_id, r.logprob, r.top) for r in delta.logprobs]
            cached[output.request_id] = output.num_cached_tokens
    return {rid: (tokens[rid], cached[rid]) for rid in requests}


def assert_hits_give_the_misses_tokens(on, off, cases: dict, misses: list[list[int]]) -> None:
    """cases: name -> (primer, target, cached tokens expected). Each target, greedy and seeded, after its primer
    ran on `on`, gets `off`'s tokens and logprobs and exactly that many cached tokens; then every target at
    once (now hitting its whole cached prompt) beside the misses, which hit nothing. No block leaks."""
    requests, expected = {}, {}
    for marker, (name, (primer, target, num_cached)) in enumerate(cases.items()):
        for kind, params in (("greedy", GREEDY), ("seeded", SEEDED)):
            tag = [1000 + 2 * marker + (kind == "seeded")]  # every case and kind on a prefix of its own
            run(on, {"primer": (tag + primer, GREEDY)})
            request_id = f"{name}-{kind}"
            requests[request_id] = (tag + target, params)
            expected[request_id] = off_tokens = run(off, {request_id: (tag + target, params)})[request_id][0]
            assert run(on, {request_id: (tag + target, params)})[request_id] == (off_tokens, num_cached), request_id
    miss_requests = {f"miss{i}": (prompt, SEEDED) for i, prompt in enumerate(misses)}
    expected |= {rid: tokens for rid, (tokens, _) in run(off, miss_requests).items()}
    together = run(on, requests | miss_requests)
    assert {rid: tokens for rid, (tokens, _) in together.items()} == expected
    assert all(together[rid][1] > 0 for rid in requests) and all(together[rid][1] == 0 for rid in miss_requests)
    assert on.allocator.num_free == on.allocator.num_blocks


def test_hit_and_miss_give_the_same_tokens_alone_and_batched(engines):
    on, off = engines
    text, other = on.tokenizer.encode(TEXT * 2), on.tokenizer.encode(OTHER)
    assert len(text) >= 160 and len(other) >= 50
    # (primer, target, cached tokens expected) after a tag token: hits are whole 16-token chunks that the
    # primer computed, short of the target's last token.
    cases = {
        "none": ([0] + text[:100], [1] + text[:100], 0),  # same tokens after another first one
        "one-block": ([0] + text[:40], [0] + text[:20] + other[:30], 16),
        "many-blocks": ([0] + text[:150], [0] + text[:150] + other[:20], 144),
        "whole-prompt": ([0] + text[:158], [0] + text[:158], 144),  # 160 tokens: the last chunk is recomputed
    }
    assert_hits_give_the_misses_tokens(on, off, cases, [[2000 + i] + other[:40 + 9 * i] for i in range(2)])


@pytest.fixture(scope="module", params=[(mode, level) for level in C_KERNEL_LEVELS for mode in ("int4", "bf16")],
                ids=lambda p: "-".join(p))
def row_kernel_engines(default_entry, request):
    """int4 or bf16 weights on the row attention kernel, caching on and off; 64-token chunks of 16-token
    blocks; at each CPU level the C kernels are built for (built and run there)."""
    from hearth.kernels.model import row_attention

    mode, level = request.param
    with capped_at(level):
        if row_attention.unavailable_reason(9, 3, 64, torch.bfloat16, torch.device("cpu")) is not None:
            pytest.skip("hearth.kernels.model.row_attention does not run here")
        config = dict(model_path=str(default_entry.path), quantization=mode, prefill_chunk_size=64,
                      max_num_batched_tokens=128, max_num_seqs=8, max_model_len=1024, kv_cache_memory_gib=0.05)
        on = LLMEngine(EngineConfig(**config), default_entry)
        off = LLMEngine(EngineConfig(**config, enable_prefix_caching=False), loaded=on.loaded)
        assert on.runner.attends_rows_alone and on.scheduler.config.has_batch_invariant_kv
        yield on, off


def test_row_kernel_hits_anywhere_give_the_misses_tokens(row_kernel_engines):
    """int4 or bf16 on the row attention kernel computes every row on its own: a prompt shorter than one chunk reuses
    cached blocks, and a hit ends at any token (the shared start of a cached block is copied). Hit and miss
    give the same tokens and logprobs, alone and batched."""
    on, off = row_kernel_engines
    text, other = on.tokenizer.encode(TEXT * 2), on.tokenizer.encode(OTHER)
    cases = {  # (primer, target, cached tokens expected), after a tag token
        "short-prompt": (text[:50], text[:40] + other[:8], 41),  # two blocks, and 9 tokens of the third
        "past-first-chunk": (text[:150], text[:120] + other[:10], 121),  # new rows in the second and third chunks
    }
    assert_hits_give_the_misses_tokens(on, off, cases, [[2000 + i] + other[:30 + 9 * i] for i in range(2)])


def test_row_kernel_chat_reuses_its_previous_answer_that_decode_steps_computed(row_kernel_engines):
    """The next turn of a chat (prompt, answer, new message) hits the answer's blocks too: decode steps compute
    a token's keys and values as a prefill does there, and the answer's last, partly filled block is copied
    from the cache. Greedy and seeded, alone and batched, the next turn gets the tokens and logprobs of a
    miss."""
    on, off = row_kernel_engines
    text, other = on.tokenizer.encode(TEXT * 2), on.tokenizer.encode(OTHER)
    answer_params = SamplingParams(temperature=0, max_tokens=40, ignore_eos=True, logprobs=True)
    requests, expected = {}, {}
    for marker, params in enumerate((GREEDY, SEEDED)):
        primer = [1200 + marker] + text[:100]  # 101 tokens: 6 full blocks from prefill
        answer = [token for token, _, _ in run(on, {"primer": (primer, answer_params)})["primer"][0]]
        assert len(answer) == 40
        # Decode computed positions 101..139 (the last answer token was never fed): blocks 6 and 7 are full,
        # 8 holds 12 tokens.
        target = primer + answer + other[:10]
        request_id = f"next-turn-{marker}"
        requests[request_id] = (target, params)
        expected[request_id] = run(off, {request_id: (target, params)})[request_id][0]
        assert run(on, {request_id: (target, params)})[request_id] == (expected[request_id], 140), request_id
        # A prompt that leaves the answer inside the partial block copies the tokens it shares.
        branch = primer + answer[:33] + other[:10]
        assert run(on, {"branch": (branch, GREEDY)})["branch"] == (run(off, {"branch": (branch, GREEDY)})["branch"][0],
                                                                   134), marker
    together = run(on, requests | {"miss": ([2100] + other[:40], GREEDY)})
    assert {rid: together[rid][0] for rid in requests} == expected
    assert on.allocator.num_free == on.allocator.num_blocks


def test_a_layer_on_a_row_tiling_gemm_keeps_hits_to_whole_chunks(row_kernel_engines):
    """Where one projection runs on a GEMM that tiles rows (a bf16 weight whose shape does not pack falls back
    to oneDNN's), a decode row's keys need not equal a prefill's: the engine must not cache decode blocks or
    copy partial ones then."""
    from hearth.engine.model.linear import dense_linear

    on, _ = row_kernel_engines
    model = on.loaded.model
    layer = model.layers[0]
    packed_o = layer["o"]
    weight = torch.randn(packed_o.out_features, packed_o.in_features, generator=torch.Generator().manual_seed(0))
    layer["o"] = dense_linear(weight.to(torch.bfloat16), None, torch.device("cpu"))
    try:
        assert not model.has_row_count_invariant_layers
        engine = LLMEngine(EngineConfig(model_path=str(on.config.model_path), prefill_chunk_size=64,
                                        max_num_batched_tokens=128, max_num_seqs=8, max_model_len=1024,
                                        kv_cache_memory_gib=0.05), loaded=on.loaded)
        assert engine.runner.attends_rows_alone and not engine.scheduler.config.has_batch_invariant_kv
    finally:
        layer["o"] = packed_o
    assert model.has_row_count_invariant_layers


def test_eviction_under_a_tiny_kv_budget_finishes_every_request_with_the_right_text(tiny_entry, engines):
    _, off = engines
    # 32 blocks of 16 tokens (the 512-token context): two requests (at most 12 blocks each) at a time fit,
    # the prefixes of all eight (34 full blocks) do not stay cached.
    config = EngineConfig(model_path=str(tiny_entry.path), dtype="float32", prefill_chunk_size=16,
                          max_num_seqs=2, kv_cache_memory_gib=32 * BLOCK_BYTES / 2**30)
    tiny = LLMEngine(config, loaded=off.loaded)
    num_evicted, preempted = 0, []
    evict, schedule = tiny.prefix_cache.evict, tiny.scheduler.schedule

    def counting_evict():
        nonlocal num_evicted
        num_evicted += 1
        return evict()

    def recording_schedule():
        out = schedule()
        preempted.extend(out.preempted)
        return out

    tiny.prefix_cache.evict, tiny.scheduler.schedule = counting_evict, recording_schedule
    text = off.tokenizer.encode(TEXT * 2)
    prompts = {f"p{i}": ([3000 + i // 2] + text[:90 + 13 * i], GREEDY) for i in range(8)}
    expected = {rid: run(off, {rid: request})[rid][0] for rid, request in prompts.items()}
    for order in (list(prompts), list(reversed(prompts))):
        got = run(tiny, {rid: prompts[rid] for rid in order})
        assert {rid: tokens for rid, (tokens, _) in got.items()} == expected
    assert num_evicted > 0 and not preempted
    assert tiny.allocator.num_free == tiny.allocator.num_blocks


@pytest.fixture(scope="module")
def chunked_engines(engines):
    """Caching on and off with 64-token chunks of 16-token blocks: hits land inside chunks."""
    on16, _ = engines
    config = dict(model_path=on16.config.model_path, dtype="float32", prefill_chunk_size=64, max_num_batched_tokens=128,
                  max_num_seqs=8, kv_cache_memory_gib=256 * BLOCK_BYTES / 2**30)
    on = LLMEngine(EngineConfig(**config), loaded=on16.loaded)
    off = LLMEngine(EngineConfig(**config, enable_prefix_caching=False), loaded=on16.loaded)
    return on, off


def test_a_conversation_reuses_its_previous_prompt_cut_anywhere_in_a_chunk(chunked_engines):
    """The next turn of a chat reuses every whole block its previous prompt's prefill computed, its short
    last chunk included (not the answer's decode steps), and gets the tokens and logprobs of a miss."""
    on, off = chunked_engines
    text, other = on.tokenizer.encode(TEXT * 2), on.tokenizer.encode(OTHER)
    requests, expected = {}, {}
    for marker, kind in enumerate(("next-turn", "inside-first-chunk", "short-primer", "short-target")):
        for params in (GREEDY, SEEDED):
            tag = [1100 + 2 * marker + (params is SEEDED)]
            primer = tag + (text[:99] if kind in ("next-turn", "short-target") else text[:69] if kind == "inside-first-chunk"
                            else text[:40])
            answer = [token for token, _, _ in run(on, {"primer": (primer, GREEDY)})["primer"][0]]
            target, num_cached = {
                "next-turn": (primer + answer + other[:30], 96),  # 100-token prompt: blocks up to 96
                "inside-first-chunk": (tag + text[:40] + other[:40], 32),  # 41 shared tokens: 2 blocks
                "short-primer": (tag + text[:40] + other[:40], 0),  # a 41-token first chunk is not cached
                "short-target": (tag + text[:50], 0),  # shorter than a chunk: reuses nothing
            }[kind]
            request_id = f"{kind}-{'seeded' if params is SEEDED else 'greedy'}"
            requests[request_id] = (target, params)
            expected[request_id] = run(off, {request_id: (target, params)})[request_id][0]
            assert run(on, {request_id: (target, params)})[request_id] == (expected[request_id], num_cached), request_id
    # Batched, each target now hitting the blocks its own prefill computed, up to its last block.
    together = run(on, requests)
    assert {rid: tokens for rid, (tokens, _) in together.items()} == expected
    assert together["next-turn-greedy"][1] == (len(requests["next-turn-greedy"][0]) - 1) // 16 * 16
    assert on.allocator.num_free == on.allocator.num_blocks
