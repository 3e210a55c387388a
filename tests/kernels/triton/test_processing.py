"""Stages 2-4 in Triton give every logit the torch path's exact float32 value, and the interpreter really
runs the kernels on CPU tensors here."""

from __future__ import annotations

import pytest
import torch

from hearth.kernels import Sampler
from hearth.kernels.logits.blockwise import block_reduce
from hearth.kernels.triton.processing import apply_processing
from tests.kernels.batches import MIXED_ROWS, zipf_logits
from tests.kernels.rows import RowParams, build_metadata
from tests.kernels.triton.conftest import DEVICE, IS_INTERPRETED

VOCAB_SIZE = 1000


@pytest.mark.skipif(not IS_INTERPRETED, reason="a CUDA device runs the kernels compiled")
def test_the_interpreter_runs_the_kernels_on_cpu_tensors():
    from triton.runtime.interpreter import InterpretedFunction

    from hearth.kernels.triton import draw, processing, softmax, truncation

    kernels = [processing._dense_kernel, processing._sparse_kernel, softmax._row_stats_kernel,
               softmax._softmax_kernel, truncation._kept_prefix_kernel, draw._draw_probs_kernel,
               draw._draw_candidates_kernel, draw._uniforms_kernel]
    assert all(isinstance(k, InterpretedFunction) for k in kernels)
    x = torch.randn(3, 300)
    block_max, _, _ = softmax.row_stats(x)
    assert block_max.device.type == "cpu"
    assert torch.equal(block_max, block_reduce(x, "max"))


@pytest.mark.parametrize("every", [False, True])
def test_processing_is_exactly_the_torch_path(every):
    logits = zipf_logits(len(MIXED_ROWS), VOCAB_SIZE, seed=12).to(DEVICE)
    md = build_metadata(MIXED_ROWS, VOCAB_SIZE, include_every_stage=every, device=DEVICE)
    expected = Sampler._process(logits.clone(), md)
    result = apply_processing(logits, md)
    assert torch.equal(result, expected)
    assert not torch.equal(result, logits)


def test_processing_reads_bf16_logits_and_leaves_them_untouched():
    rows = [RowParams(logit_bias={3: 2.5, 999: -1.0}, repetition_penalty=1.3, prompt_token_ids=(3, 4, 5),
                      output_token_ids=(5, 5, 6), frequency_penalty=0.7, presence_penalty=0.4),
            RowParams(banned_token_ids=(0, 1), allowed_token_ids=tuple(range(0, VOCAB_SIZE, 3))),
            RowParams(), RowParams(repetition_penalty=0.8, prompt_token_ids=tuple(range(0, 300, 3)))]
    logits = (zipf_logits(len(rows), VOCAB_SIZE, seed=5) + 20.0).bfloat16().to(DEVICE)
    copy = logits.clone()
    md = build_metadata(rows, VOCAB_SIZE, device=DEVICE)
    expected = Sampler._process(logits.float(), md)
    assert torch.equal(apply_processing(logits, md), expected)
    assert torch.equal(logits, copy)
