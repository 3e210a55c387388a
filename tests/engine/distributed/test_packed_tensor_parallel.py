"""Packed-weight modes (int4, and bf16 on hearth's kernels) under tensor parallelism on CPU ranks, against one
rank. A module of its own: one process runs one tensor-parallel group at a time, and test_tensor_parallel.py
keeps its groups alive for the whole module."""

from __future__ import annotations

import pytest

from hearth.engine.config import EngineConfig
from hearth.engine.llm_engine import LLMEngine
from hearth.engine.sampling.sampling_params import SamplingParams
from tests.conftest import chat_prompt

# Three ranks add o's and down's partial sums in another order than one rank (float32, rank order), and
# bf16 activations round those last-bit differences up to a bf16 step now and then: the logprobs drift by a
# few hundredths over a prompt (measured: at most 0.06 over 24 tokens of int4 on AVX-512). So the answers
# agree token for token until a position where one rank's top two are within TIE of each other, where they
# may part; each agreeing token's logprob is within DRIFT.
DRIFT = 0.1
TIE = 2 * DRIFT


@pytest.mark.parametrize("quantization", ["int4", "bf16"])
def test_packed_weight_modes_on_three_ranks_follow_one_rank_up_to_a_near_tie(default_entry, quantization):
    """int4 and bf16 on hearth's kernels, sharded over 3 CPU ranks (the default model's 3 KV heads, one per
    rank): each layer runs the torch path and o and down add float32 partial sums across ranks. The greedy
    answers are batch-invariant at each rank count and follow one rank's as above."""
    from hearth.kernels.model import vnni_linear

    if vnni_linear.unavailable_reason() is not None:
        pytest.skip(f"hearth.kernels.model.vnni_linear: {vnni_linear.unavailable_reason()}")
    answers = {}
    for ranks in (1, 3):
        engine = LLMEngine(EngineConfig(model_path=str(default_entry.path), quantization=quantization, max_num_seqs=4,
                                        max_model_len=1024, kv_cache_memory_gib=0.05, tensor_parallel_size=ranks),
                           default_entry)
        try:
            questions = {"france": "What is the capital of France?", "rain": "Why does it rain?"}
            prompts = {key: chat_prompt(engine, question) for key, question in questions.items()}
            params = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True, logprobs=True, top_logprobs=2)
            alone = {}
            for key, prompt in prompts.items():
                alone[key] = generate(engine, {key: prompt}, params)[key]
            assert generate(engine, prompts, params) == alone, ranks
            answers[ranks] = alone
        finally:
            engine.close()
    for key, one_rank in answers[1].items():
        for position, (expected, got) in enumerate(zip(one_rank, answers[3][key], strict=True)):
            if expected.token_id != got.token_id:
                (_, first), (_, second) = expected.top
                assert first - second < TIE, (key, position, expected, got)
                break
            assert abs(expected.logprob - got.logprob) <= DRIFT, (key, position, expected, got)
    assert [t.token_id for t in answers[3]["france"]] == [t.token_id for t in answers[1]["france"]]


def generate(engine, prompts: dict, params) -> dict:
    """id -> the logprob records of its tokens (token_id, logprob, top), all prompts added at once."""
    for key, prompt in prompts.items():
        engine.add_request(key, prompt, params)
    records = {key: [] for key in prompts}
    while engine.has_unfinished_requests():
        for output in engine.step():
            records[output.request_id] += output.choices[0].logprobs
    return records
