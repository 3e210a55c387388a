"""Tensor parallelism on CPU ranks (gloo): a tiny random Llama (4 heads, 2 KV heads) sharded over 2 ranks,
and over 4 (each KV head replicated on 2 ranks), against the same model on one rank.

This process is rank 0 (the engine spawns the other ranks); float32 throughout. The only numerical
difference from one rank is the order of additions: o and down sum per-rank partial products, so logits
agree to TOLERANCE rather than bit for bit (measured here: 3e-7 at 2 and at 4 ranks), and tokens are
identical.
"""

from __future__ import annotations

import pytest
import torch

from hearth.engine.config import EngineConfig
from hearth.engine.llm_engine import LLMEngine
from hearth.engine.loading.registry import ModelEntry
from hearth.engine.sampling.sampling_params import SamplingParams
from tests.conftest import run_to_completion, save_tiny_llama

# Max |logit difference| over every sampled row of a request's 64 steps (float32; logits here are ~0.1-1).
TOLERANCE = 1e-5
PROMPT = list(range(100, 140))
GREEDY = SamplingParams(temperature=0, max_tokens=64, ignore_eos=True)


@pytest.fixture(scope="module")
def tp_entry(tmp_path_factory, default_entry) -> ModelEntry:
    """Untied embeddings and head: a random tied model greedily repeats its last token, which would test
    little."""
    folder = save_tiny_llama(tmp_path_factory.mktemp("tp-llama"), default_entry, tie_word_embeddings=False)
    return ModelEntry(id="tp-tiny", path=folder, max_model_len=512)


def make_engine(entry: ModelEntry, tensor_parallel_size: int) -> LLMEngine:
    return LLMEngine(EngineConfig(model_path=str(entry.path), dtype="float32", max_num_seqs=8,
                                  kv_cache_memory_gib=0.05, tensor_parallel_size=tensor_parallel_size), entry)


def greedy_with_logits(engine: LLMEngine) -> tuple[list[int], torch.Tensor]:
    """Tokens of GREEDY on PROMPT, and the logits of every step [65, vocab] (prefill and 64 decodes)."""
    seen = []
    execute = engine.runner.execute

    def recording(chunks, block_copies):
        logits = execute(chunks, block_copies)
        seen.append(logits.float().clone())  # the sampler works in the logits in place
        return logits

    engine.runner.execute = recording
    try:
        engine.add_request("greedy", PROMPT, GREEDY)
        tokens = run_to_completion(engine)["greedy"][0]
    finally:
        del engine.runner.execute
    return tokens, torch.cat(seen)


def mixed_batch(engine: LLMEngine) -> dict:
    """Greedy, seeded n=2 and top-p requests together, one of them aborted after a few steps."""
    engine.add_request("abort", PROMPT[:20], SamplingParams(temperature=1.0, seed=5, max_tokens=64))
    for _ in range(3):
        engine.step()
    engine.abort_request("abort")
    engine.add_request("greedy", PROMPT, GREEDY)
    engine.add_request("seeded", PROMPT[:7], SamplingParams(temperature=0.9, seed=3, n=2, max_tokens=48,
                                                            ignore_eos=True))
    engine.add_request("top_p", PROMPT[5:30], SamplingParams(temperature=1.2, top_p=0.8, seed=8, max_tokens=32,
                                                             ignore_eos=True))
    tokens = run_to_completion(engine)
    assert engine.stats()["kv_blocks_used"] == 0
    return tokens


@pytest.fixture(scope="module")
def one_rank(tp_entry):
    engine = make_engine(tp_entry, 1)
    yield {"engine": engine, "greedy": greedy_with_logits(engine), "mixed": mixed_batch(engine)}
    engine.close()


@pytest.fixture(scope="module", params=[2, 4], ids=["tp2", "tp4-kv-replicated"])
def sharded(request, tp_entry):
    engine = make_engine(tp_entry, request.param)
    yield engine
    engine.close()


def test_greedy_tokens_equal_one_rank_and_logits_within_tolerance(sharded, one_rank):
    tokens, logits = greedy_with_logits(sharded)
    expected_tokens, expected_logits = one_rank["greedy"]
    assert len(tokens) == 64
    assert tokens == expected_tokens
    assert (logits - expected_logits).abs().max().item() <= TOLERANCE


def test_seeded_sampling_n_choices_and_aborts_equal_one_rank(sharded, one_rank):
    assert mixed_batch(sharded) == one_rank["mixed"]


def test_tokens_alone_equal_tokens_batched(sharded):
    """Batch invariance holds per rank count: every rank's GEMMs are calibrated row tilings and the
    all-reduce sums each element in rank order, whatever the row count."""
    requests = {"g": (PROMPT, GREEDY),
                "s": (PROMPT[3:20], SamplingParams(temperature=0.9, seed=11, max_tokens=24, ignore_eos=True)),
                "h": (PROMPT[:9], SamplingParams(temperature=0, max_tokens=24, ignore_eos=True))}
    alone = {}
    for request_id, (prompt, params) in requests.items():
        sharded.add_request(request_id, prompt, params)
        alone.update(run_to_completion(sharded))
    for request_id, (prompt, params) in requests.items():
        sharded.add_request(request_id, prompt, params)
    assert run_to_completion(sharded) == alone


def test_each_rank_holds_about_one_nth_of_the_weights(sharded, one_rank):
    whole = one_rank["engine"].loaded.rank_weight_bytes[0]
    per_rank = sharded.loaded.rank_weight_bytes
    world_size = sharded.config.tensor_parallel_size
    assert len(per_rank) == world_size
    assert sum(per_rank) >= whole  # nothing lost (replicated norms and KV heads add a little)
    assert max(per_rank) <= 1.25 * whole / world_size


def test_head_counts_that_cannot_be_sharded_are_refused_before_any_rank_starts(tp_entry):
    with pytest.raises(ValueError, match="tensor_parallel_size=3"):
        make_engine(tp_entry, 3)

