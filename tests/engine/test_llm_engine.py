"""The engine on the default model: continuous batching gives every request the tokens it gets alone."""

from __future__ import annotations

import pytest

from hearth.engine.config import EngineConfig
from hearth.engine.llm_engine import LLMEngine
from hearth.engine.sampling.sampling_params import SamplingParams
from tests.conftest import chat_prompt, run_to_completion

QUESTIONS = [
    "What is the capital of France?", "Name three colours.", "Write a haiku about rain.",
    "Explain gravity in one sentence.", "List the days of the week.", "What is 12 times 12?",
    "Tell me a joke about cats.", "Describe a sunset.", "Why is the sky blue? Answer at length, with details.",
    "Give me a recipe for pancakes.", "What does a CPU do?", "Say hello in French.",
    "Count from one to ten.", "What is the largest ocean?", "Suggest a name for a dog.", "Summarise Hamlet.",
]

PARAMS = [
    SamplingParams(temperature=0, max_tokens=12),
    SamplingParams(temperature=0.7, seed=1, max_tokens=12),
    SamplingParams(temperature=1.0, top_p=0.9, seed=2, max_tokens=12),
    SamplingParams(temperature=0.9, top_k=20, seed=3, max_tokens=12),
    SamplingParams(temperature=0, frequency_penalty=1.5, max_tokens=12),
    SamplingParams(temperature=0.8, presence_penalty=1.0, seed=4, max_tokens=12),
    SamplingParams(temperature=0, logit_bias={504: -100.0, 28: 5.0}, max_tokens=12),
    SamplingParams(temperature=1.2, min_p=0.1, seed=5, max_tokens=12),
    SamplingParams(temperature=0, repetition_penalty=1.3, max_tokens=16),
    SamplingParams(temperature=0.6, seed=6, logprobs=True, top_logprobs=5, max_tokens=12),
    SamplingParams(temperature=1.0, seed=7, n=2, max_tokens=12),
    SamplingParams(temperature=0, stop=("\n",), max_tokens=12),
    SamplingParams(temperature=0.5, top_p=0.5, top_k=10, seed=8, max_tokens=10),
    SamplingParams(temperature=0, min_tokens=8, max_tokens=12),
    SamplingParams(temperature=1.5, top_p=0.95, seed=9, frequency_penalty=0.5, max_tokens=12),
    SamplingParams(temperature=0, max_tokens=6),
]


@pytest.fixture(scope="module")
def engine(default_entry) -> LLMEngine:
    # Small prefill chunks so that prompts are cut into several chunks that run beside decodes.
    config = EngineConfig(model_path=str(default_entry.path), prefill_chunk_size=16, max_num_batched_tokens=48,
                          max_num_seqs=32)
    return LLMEngine(config, default_entry)


def generate(engine, requests):
    for request_id, question, params in requests:
        engine.add_request(request_id, chat_prompt(engine, question), params)
    return run_to_completion(engine)


def test_sixteen_concurrent_requests_get_exactly_their_solo_tokens(engine):
    requests = [(f"r{i}", q, p) for i, (q, p) in enumerate(zip(QUESTIONS, PARAMS))]
    alone = {}
    for request in requests:
        alone.update(generate(engine, [request]))
    together = generate(engine, requests)
    assert together == alone
    # Reversed arrival order: different batch rows and chunk interleaving, same tokens.
    assert generate(engine, list(reversed(requests))) == alone
    assert engine.allocator.num_free == engine.allocator.num_blocks
    assert engine.scheduler.num_free_slots == engine.config.max_num_seqs


def test_n_choices_with_a_seed_repeat_and_differ(engine):
    params = SamplingParams(n=3, temperature=1.0, seed=1234, max_tokens=20)
    first = generate(engine, [("a", "Tell me about the moon.", params)])["a"]
    second = generate(engine, [("b", "Tell me about the moon.", params)])["b"]
    assert first == second
    assert len({tuple(tokens) for tokens in first.values()}) == 3


def test_n_choices_share_one_prefill(engine, monkeypatch):
    computed = []
    original = engine.runner.execute

    def counting(chunks, copies):
        computed.extend(c.num_tokens for c in chunks)
        return original(chunks, copies)

    monkeypatch.setattr(engine.runner, "execute", counting)
    prompt = chat_prompt(engine, "Tell me about the sea.")
    num_hits = engine.prefix_cache.num_hit_tokens
    engine.add_request("n4", prompt, SamplingParams(n=4, temperature=1, seed=1, max_tokens=5, ignore_eos=True))
    outputs = run_to_completion(engine)["n4"]
    assert sorted(outputs) == [0, 1, 2, 3] and all(len(t) == 5 for t in outputs.values())
    # The prompt once (less what the prefix cache held: the chat template's system prompt), then 4 choices
    # x 4 decode steps (the first token of each comes from the prefill).
    num_cached = engine.prefix_cache.num_hit_tokens - num_hits
    assert num_cached > 0 and sum(computed) == len(prompt) - num_cached + 4 * 4


def test_unseeded_requests_differ(engine):
    params = SamplingParams(temperature=1.0, max_tokens=16)
    outputs = generate(engine, [("u1", "Tell me a story.", params), ("u2", "Tell me a story.", params)])
    assert outputs["u1"][0] != outputs["u2"][0]


def test_abort_frees_memory_at_once(engine):
    engine.add_request("x", chat_prompt(engine, "Write a long essay."), SamplingParams(max_tokens=200, seed=1))
    for _ in range(5):
        engine.step()
    assert engine.allocator.num_free < engine.allocator.num_blocks
    engine.abort_request("x")
    assert not engine.has_unfinished_requests()
    assert engine.allocator.num_free == engine.allocator.num_blocks
    assert engine.scheduler.num_free_slots == engine.config.max_num_seqs
    assert int(engine.sampling_state.output_counts.sum()) == 0


def test_preemption_under_memory_pressure_finishes_every_request(default_entry):
    # ~24 blocks of 16 tokens: less than 8 requests of ~35 prompt + 16 output tokens need at once (4 each).
    config = EngineConfig(model_path=str(default_entry.path), kv_cache_memory_gib=24 * 16 * 23040 / 2**30,
                          max_model_len=256, max_num_seqs=8)
    engine = LLMEngine(config, default_entry, loaded=None)
    params = SamplingParams(temperature=0, max_tokens=16, ignore_eos=True)
    preempted = []
    original = engine.scheduler.schedule

    def counting():
        out = original()
        preempted.extend(out.preempted)
        return out

    engine.scheduler.schedule = counting
    for i in range(8):
        engine.add_request(f"p{i}", chat_prompt(engine, QUESTIONS[i]), params)
    outputs = {k: v[0] for k, v in run_to_completion(engine).items()}
    assert preempted, "the budget was meant to force preemption"
    assert sorted(outputs) == sorted(f"p{i}" for i in range(8))
    assert all(len(tokens) == 16 for tokens in outputs.values())
    assert engine.allocator.num_free == engine.allocator.num_blocks


def test_more_choices_than_sequence_slots_are_refused_not_left_waiting(engine):
    with pytest.raises(ValueError, match="n must be at most 32"):
        engine.add_request("too-many", chat_prompt(engine, "Hi"), SamplingParams(n=33, max_tokens=4))
    assert not engine.has_unfinished_requests()
