"""The whole sampler on the Triton passes gives the torch path's tokens and (within float32 rounding) its
logprobs; on CUDA, the automatic choice (Triton) gives the CPU's tokens."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from hearth.kernels import Sampler
from tests.kernels.batches import MIXED_ROWS, at_position, tied_logits, zipf_logits
from tests.kernels.rows import RowParams, build_metadata, to_device
from tests.kernels.triton.conftest import DEVICE

VOCAB_SIZE = 1000


def assert_same(result, expected, rows: list[RowParams]) -> None:
    assert torch.equal(result.token_ids, expected.token_ids)
    if expected.logprobs is None:
        assert result.logprobs is None
        return
    torch.testing.assert_close(result.logprobs, expected.logprobs, rtol=0, atol=1e-5)
    for i, row in enumerate(rows):
        num = row.num_top_logprobs or 0
        assert torch.equal(result.top_token_ids[i, :num], expected.top_token_ids[i, :num]), i
        torch.testing.assert_close(result.top_logprobs[i, :num], expected.top_logprobs[i, :num], rtol=0, atol=1e-5)


@pytest.mark.parametrize("processed", [False, True])
def test_mixed_rows_get_the_torch_tokens_and_logprobs(processed):
    logits = zipf_logits(len(MIXED_ROWS), VOCAB_SIZE, seed=0).to(DEVICE)
    for step in range(2):
        rows = at_position(MIXED_ROWS, step)
        md = build_metadata(rows, VOCAB_SIZE, is_logprobs_processed=processed, device=DEVICE)
        assert_same(Sampler(backend="triton")(logits, md), Sampler(backend="torch")(logits, md), rows)


def test_bf16_logits_greedy_and_truncated_batches():
    logits = tied_logits(4, VOCAB_SIZE, seed=3).to(DEVICE)
    batches = [
        [RowParams(temperature=0.0, num_top_logprobs=3)] * 4,
        [RowParams(temperature=0.0), RowParams(top_k=20, seed=1, num_top_logprobs=2),
         RowParams(top_p=0.8, top_k=40, seed=2), RowParams(min_p=0.2, seed=3)],
        [RowParams(seed=s, temperature=1.1, logit_bias={7: 3.0}, num_top_logprobs=1) for s in range(4)],
    ]
    for rows in batches:
        md = build_metadata(rows, VOCAB_SIZE, device=DEVICE)
        assert_same(Sampler(backend="triton")(logits, md), Sampler(backend="torch")(logits, md), rows)


@pytest.mark.gpu
@pytest.mark.parametrize("vocab_size", [1000, 128256])
def test_cuda_sampler_picks_the_cpu_tokens(vocab_size):
    """Sampler() on CUDA logits runs the Triton passes; the same request gets the CPU's tokens."""
    rows = [dataclasses.replace(r, allowed_token_ids=None if r.allowed_token_ids is None else tuple(range(0, 1000, 2)))
            for r in MIXED_ROWS]
    logits = zipf_logits(len(rows), vocab_size, seed=11)
    for processed in (False, True):
        for step in range(8):
            step_rows = at_position(rows, step)
            md = build_metadata(step_rows, vocab_size, is_logprobs_processed=processed)
            cpu = Sampler()(logits, md)
            sampler = Sampler()
            cuda = sampler(logits.cuda(), to_device(md, "cuda"))
            assert sampler._is_triton(logits.cuda())
            assert torch.equal(cuda.token_ids.cpu(), cpu.token_ids)
            torch.testing.assert_close(cuda.logprobs.cpu(), cpu.logprobs, atol=1e-4, rtol=0)
            torch.testing.assert_close(cuda.top_logprobs.cpu(), cpu.top_logprobs, atol=1e-4, rtol=0)
