"""Packed-weight modes (int4, and bf16 on hearth's kernels) under tensor parallelism on CPU ranks, against one
rank. A module of its own: one process runs one tensor-parallel group at a time, and test_tensor_parallel.py
keeps its groups alive for the whole module."""

from __future__ import annotations

import pytest

from hearth.engine.config import EngineConfig
from hearth.engine.llm_engine import LLMEngine
from hearth.engine.sampling.sampling_params import SamplingParams
from tests.conftest import chat_prompt, run_to_completion


@pytest.mark.parametrize("quantization", ["int4", "bf16"])
def test_packed_weight_modes_on_three_ranks_give_one_ranks_greedy_tokens(default_entry, quantization):
    """int4 and bf16 on hearth's kernels, sharded over 3 CPU ranks (the default model's 3 KV heads, one per
    rank): each layer runs the torch path, o and down add float32 partial sums across ranks, and the greedy
    answers equal one rank's, alone and batched."""
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
            params = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True)
            alone = {}
            for key, prompt in prompts.items():
                engine.add_request(key, prompt, params)
                alone.update(run_to_completion(engine))
            for key, prompt in prompts.items():
                engine.add_request(key, prompt, params)
            assert run_to_completion(engine) == alone, ranks
            answers[ranks] = alone
        finally:
            engine.close()
    assert answers[3] == answers[1]
