"""Row statistics and the tempered softmax in Triton against torch: block maxima exactly, the rest within
float32 rounding."""

from __future__ import annotations

import math

import pytest
import torch

from hearth.kernels.logits.blockwise import block_reduce
from hearth.kernels.triton.softmax import row_stats, tempered_softmax
from tests.kernels.batches import zipf_logits
from tests.kernels.triton.conftest import DEVICE


@pytest.mark.parametrize("vocab_size", [1, 7, 1000, 2049])
def test_row_stats_and_softmax_match_torch(vocab_size):
    logits = zipf_logits(4, vocab_size, seed=vocab_size).to(DEVICE)
    logits[1, : vocab_size // 2] = -math.inf  # masked tokens, as the bitmask leaves them
    temperature = torch.tensor([1.0, 0.7, 1.3, 0.05], device=DEVICE)
    for temp in (None, temperature):
        block_max, row_max, sum_exp = row_stats(logits, temp)
        tempered = logits if temp is None else logits / temp.unsqueeze(1)
        assert torch.equal(block_max, block_reduce(logits, "max"))
        assert torch.equal(row_max, tempered.amax(1))
        torch.testing.assert_close(row_max + sum_exp.log(), torch.logsumexp(tempered, 1), rtol=0, atol=2e-6)
        probs, block_sums = tempered_softmax(logits, temp, row_max, sum_exp)
        expected = torch.softmax(tempered, 1)
        torch.testing.assert_close(probs, expected, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(block_sums, block_reduce(expected, "sum"), rtol=1e-5, atol=1e-7)


def test_bf16_logits_are_read_as_they_are():
    logits = (zipf_logits(3, 1000, seed=2) + 24.0).bfloat16().to(DEVICE)
    block_max, row_max, sum_exp = row_stats(logits)
    assert torch.equal(block_max, block_reduce(logits.float(), "max"))
    torch.testing.assert_close(row_max + sum_exp.log(), torch.logsumexp(logits.float(), 1), rtol=0, atol=4e-6)
