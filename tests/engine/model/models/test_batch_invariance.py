"""A request's tokens do not depend on what else is batched with it, in bfloat16 and float32."""

from __future__ import annotations

import pytest
import torch

from engine.config import EngineConfig
from engine.llm_engine import LLMEngine
from engine.model.models.llama import batch_invariant_padding
from engine.sampling.sampling_params import SamplingParams
from tests.conftest import chat_prompt, run_to_completion


def test_row_padding_is_only_used_where_measured_necessary():
    fp32 = batch_invariant_padding(torch.float32, torch.device("cpu"))
    bf16 = batch_invariant_padding(torch.bfloat16, torch.device("cpu"))
    assert [fp32.padded(n) for n in (1, 7, 8, 9, 17)] == [8, 8, 8, 16, 24]
    assert [bf16.padded(n) for n in (1, 2, 3, 9)] == [2, 2, 3, 9]


@pytest.mark.parametrize("dtype, is_prepacked", [("float32", False), ("bfloat16", False), ("bfloat16", True)])
def test_linear_rows_are_identical_in_any_batch_size(default_entry, dtype, is_prepacked):
    engine_dtype = getattr(torch, dtype)
    from transformers import AutoConfig

    from engine.model.models.llama import LlamaModel

    model = LlamaModel(AutoConfig.from_pretrained(default_entry.path), engine_dtype, torch.device("cpu"), 16)
    torch.manual_seed(0)
    weight = (torch.randn(960, 576) * 0.05).to(engine_dtype)
    if is_prepacked:
        model.is_prepacked = True
        weight = torch.ops.mkldnn._reorder_linear_weight(weight, 8)
    rows = torch.randn(40, 576).to(engine_dtype)
    reference = [model._linear(rows[i:i + 1], weight) for i in range(40)]
    for size in (2, 3, 5, 7, 8, 9, 11, 12, 16, 33, 40):
        assert torch.equal(model._linear(rows[:size], weight), torch.cat(reference[:size]))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_greedy_and_seeded_tokens_alone_equal_amid_others(default_entry, dtype):
    engine = LLMEngine(EngineConfig(model_path=str(default_entry.path), dtype=dtype, max_num_seqs=8,
                                    prefill_chunk_size=32, max_num_batched_tokens=64), default_entry)
    questions = ["What is rain?", "Name a fruit.", "Why do cats purr? Explain.", "Write one word.", "Hi!"]
    params = [SamplingParams(temperature=0, max_tokens=16, ignore_eos=True),
              SamplingParams(temperature=0.9, seed=11, max_tokens=16, ignore_eos=True)]
    requests = [(f"{i}-{j}", q, p) for i, q in enumerate(questions) for j, p in enumerate(params)]
    alone = {}
    for request_id, question, p in requests:
        engine.add_request(request_id, chat_prompt(engine, question), p)
        alone.update(run_to_completion(engine))
    for request_id, question, p in requests:
        engine.add_request(request_id, chat_prompt(engine, question), p)
    assert run_to_completion(engine) == alone
