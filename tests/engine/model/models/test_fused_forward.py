"""The int4, int8 and bf16 forwards' layers as hearth.kernels.model.fused_layer's calls give the tokens of the torch ops they replace, and
a decode step's stack in one call (apply_decode_layers) gives those of the per-layer calls."""

from __future__ import annotations

import pytest

from hearth.engine.config import EngineConfig
from hearth.engine.llm_engine import LLMEngine
from hearth.engine.sampling.sampling_params import SamplingParams
from hearth.kernels.model import fused_layer
from tests.conftest import chat_prompt

pytestmark = pytest.mark.skipif(fused_layer.unavailable_reason() is not None,
                                reason=f"hearth.kernels.model.fused_layer: {fused_layer.unavailable_reason()}")


@pytest.mark.parametrize("quantization", ["int4", "int8", "bf16"])
def test_fused_layers_give_the_torch_paths_greedy_tokens(default_entry, quantization):
    engine = LLMEngine(EngineConfig(model_path=str(default_entry.path), quantization=quantization, max_num_seqs=4,
                                    kv_cache_memory_gib=0.25), default_entry)
    model = engine.loaded.model
    assert model.fused_layer_reason is None
    questions = ["What is the capital of France?", "Name three rivers in Europe.", "Why is the sky blue?",
                 "Write a haiku about rain."]
    params = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True, logprobs=True, top_logprobs=2)

    def tokens() -> dict:
        """request id -> its tokens' logprobs entries (each token, its logprob and top 2)."""
        for i, question in enumerate(questions):
            engine.add_request(f"q{i}", chat_prompt(engine, question), params)
        out: dict[str, list] = {}
        while engine.has_unfinished_requests():
            for output in engine.step():
                out.setdefault(output.request_id, []).extend(
                    entry for delta in output.choices for entry in delta.logprobs)
        assert all(len(entries) == 24 for entries in out.values())
        return out

    fused = tokens()
    model.uses_decode_stack = False
    try:
        # Tokens and their logprobs: the same bits in every decode step.
        assert tokens() == fused
        model.fused_layer_reason = "forced off by the test"
        assert tokens() == fused
    finally:
        model.fused_layer_reason = None
        model.uses_decode_stack = True
