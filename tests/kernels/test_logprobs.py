"""Logprob statistics read off a softmax agree with a float64 log_softmax, including after truncation."""

from __future__ import annotations

import math

import pytest
import torch

from kernels.logprobs import apply_kept_prefix, logprob_stats, token_logprobs
from tests.kernels import reference


@pytest.mark.parametrize("vocab_size", [1, 7, 1000, 50257])
@pytest.mark.parametrize("scale", [0.01, 3.0, 30.0])
def test_stats_match_float64_log_softmax(vocab_size, scale):
    generator = torch.Generator().manual_seed(vocab_size)
    logits = torch.randn(4, vocab_size, generator=generator) * scale + 5.0
    logits[1, ::2] = -math.inf
    logits[1, -1] = 0.0
    num_top = 20
    stats = logprob_stats(logits, torch.softmax(logits, dim=1), num_top)
    num = min(num_top, vocab_size)
    assert stats.top_token_ids.shape == stats.top_logprobs.shape == (4, num)
    for i in range(4):
        expected = reference.log_softmax(logits[i])
        assert stats.lse[i].item() == pytest.approx(torch.logsumexp(logits[i].double(), 0).item(), abs=1e-5)
        best = torch.sort(expected, descending=True).values[:num]
        torch.testing.assert_close(stats.top_logprobs[i].double(), best, atol=1e-5, rtol=1e-6)
        torch.testing.assert_close(expected[stats.top_token_ids[i]], best, atol=1e-5, rtol=1e-6)
        ids = torch.arange(vocab_size)
        torch.testing.assert_close(
            token_logprobs(logits[i:i + 1].expand(vocab_size, -1), stats.lse[i:i + 1], ids).double(),
            expected, atol=1e-5, rtol=1e-6,
        )


def test_kept_prefix_renormalises_and_drops_cut_alternatives():
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0, -1.0], [3.0, 2.0, 1.0, 0.0, -1.0]])
    probs = torch.softmax(logits, dim=1)
    stats = logprob_stats(logits, probs, 4)
    keep_len = torch.tensor([2, 5])
    kept_mass = torch.stack([probs[0, :2].double().sum(), probs[1].double().sum()])
    total_mass = probs.double().sum(1)
    result = apply_kept_prefix(stats, logits, keep_len, kept_mass, total_mass, torch.tensor([True, False]))

    kept = torch.softmax(logits[0, :2].double(), dim=0).log()
    torch.testing.assert_close(result.top_logprobs[0, :2].double(), kept, atol=1e-6, rtol=0)
    assert (result.top_logprobs[0, 2:] == -math.inf).all()
    # The chosen token's logprob follows the same renormalisation.
    torch.testing.assert_close(
        token_logprobs(logits, result.lse, torch.tensor([1, 3])).double(),
        torch.tensor([kept[1].item(), reference.log_softmax(logits[1])[3].item()], dtype=torch.float64),
        atol=1e-6, rtol=0,
    )
    # An untruncated row is unchanged.
    assert torch.equal(result.top_logprobs[1], stats.top_logprobs[1])
