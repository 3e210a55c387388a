"""A request's tokens do not depend on what else is batched with it, in every dtype and weight mode."""

from __future__ import annotations

import pytest

from hearth.engine.config import EngineConfig
from hearth.engine.llm_engine import LLMEngine
from hearth.engine.sampling.sampling_params import SamplingParams
from hearth.kernels.model import row_attention
from tests.conftest import CPU_LEVELS, capped_at, chat_prompt, run_to_completion, skip_unless_mode_runs

# Each bf16 mode at every CPU level this machine runs (each level takes its own paths: oneDNN prepacking, the
# C kernels' primitives, aten's fallbacks); float32 takes the same paths at every level, so once.
CASES = [("float32", "none", CPU_LEVELS[-1])] + [
    ("bfloat16", quantization, level) for level in CPU_LEVELS for quantization in ("none", "bf16", "int8", "int4")]


@pytest.mark.parametrize("dtype, quantization, level", CASES)
def test_greedy_and_seeded_tokens_alone_equal_amid_others(default_entry, dtype, quantization, level):
    with capped_at(level):
        skip_unless_mode_runs(quantization)
        check_batch_invariance(default_entry, dtype, quantization)


def check_batch_invariance(default_entry, dtype: str, quantization: str) -> None:
    engine = LLMEngine(EngineConfig(model_path=str(default_entry.path), dtype=dtype, quantization=quantization,
                                    max_num_seqs=12, prefill_chunk_size=32, max_num_batched_tokens=64,
                                    max_model_len=1024, kv_cache_memory_gib=0.25), default_entry)
    # Every mode but none attends its rows with hearth.kernels.model.row_attention where it runs, SDPA otherwise.
    model = engine.loaded.model
    assert engine.runner.attends_rows_alone == (quantization != "none" and row_attention.unavailable_reason(
        model.num_heads, model.num_kv_heads, model.shape.head_dim, model.dtype, engine.loaded.device) is None)
    # Prompts of three lengths, each greedy and seeded: six rows of different lengths, prefilled in chunks
    # beside each other's decodes when batched.
    questions = ["Name a fruit.", "Why do cats purr? Explain.", "Hi!"]
    params = [SamplingParams(temperature=0, max_tokens=8, ignore_eos=True),
              SamplingParams(temperature=0.9, seed=11, max_tokens=8, ignore_eos=True)]
    requests = [(f"{i}-{j}", q, p) for i, q in enumerate(questions) for j, p in enumerate(params)]
    alone = {}
    for request_id, question, p in requests:
        engine.add_request(request_id, chat_prompt(engine, question), p)
        alone.update(run_to_completion(engine))
    for request_id, question, p in requests:
        engine.add_request(request_id, chat_prompt(engine, question), p)
    assert run_to_completion(engine) == alone
