"""The same requests at each CPU level the C kernels run at give identical tokens and logprobs: the kernels'
integer block dot products are exact and their float operations run in one order at every level
(tests/kernels/model/test_levels.py), and so does the rest of the step."""

from __future__ import annotations

import itertools

import pytest

from hearth.engine.config import EngineConfig
from hearth.engine.llm_engine import LLMEngine
from hearth.engine.sampling.sampling_params import SamplingParams
from tests.conftest import C_KERNEL_LEVELS, capped_at, chat_prompt

PAIRS = list(itertools.combinations(C_KERNEL_LEVELS, 2))
pytestmark = pytest.mark.skipif(not PAIRS, reason=f"fewer than two C kernel levels here ({C_KERNEL_LEVELS})")
PARAMS = [SamplingParams(temperature=0, max_tokens=24, ignore_eos=True, logprobs=True, top_logprobs=3),
          SamplingParams(temperature=0.9, seed=7, max_tokens=24, ignore_eos=True, logprobs=True, top_logprobs=3)]


def answers(default_entry, quantization: str) -> dict:
    engine = LLMEngine(EngineConfig(model_path=str(default_entry.path), quantization=quantization, max_num_seqs=8,
                                    max_model_len=1024, kv_cache_memory_gib=0.05), default_entry)
    for i, question in enumerate(["What is the capital of France?", "Why does it rain?", "Name three rivers."]):
        for j, params in enumerate(PARAMS):
            engine.add_request(f"{i}-{j}", chat_prompt(engine, question), params)
    records: dict = {}
    while engine.has_unfinished_requests():
        for output in engine.step():
            records.setdefault(output.request_id, []).extend(
                (r.token_id, r.logprob, r.top) for r in output.choices[0].logprobs)
    return records


@pytest.mark.parametrize("pair", PAIRS, ids=["-".join(p) for p in PAIRS])
@pytest.mark.parametrize("quantization", ["int4", "bf16"])
def test_greedy_and_seeded_answers_are_identical_at_each_level(default_entry, pair, quantization):
    results = []
    for level in pair:
        with capped_at(level):
            results.append(answers(default_entry, quantization))
    assert results[0] == results[1]
