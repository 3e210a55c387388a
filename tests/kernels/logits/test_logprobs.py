"""Logprob statistics read off a softmax agree with a float64 log_softmax, including after truncation."""

from __future__ import annotations

import math

import pytest
import torch

from hearth.kernels.logits.logprobs import candidate_logprob_stats, logprob_stats
from hearth.kernels.logits.truncation import select_candidates
from tests.kernels import reference


@pytest.mark.parametrize("vocab_size", [1, 7, 1000, 50257])
@pytest.mark.parametrize("scale", [0.01, 3.0, 30.0])
def test_stats_match_float64_log_softmax(vocab_size, scale):
    generator = torch.Generator().manual_seed(vocab_size)
    logits = torch.randn(4, vocab_size, generator=generator) * scale + 5.0
    logits[1, ::2] = -math.inf
    logits[1, -1] = 0.0
    num_top = 20
    top_ids = torch.sort(logits, dim=1, descending=True, stable=True).indices[:, :max(num_top, 1)]
    stats = logprob_stats(logits, torch.softmax(logits, dim=1), top_ids, num_top)
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
            (logits[i, ids] - stats.lse[i]).double(),
            expected, atol=1e-5, rtol=1e-6,
        )


def test_candidate_logprobs_renormalise_over_the_kept_prefix():
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0, -1.0], [3.0, 2.0, 1.0, 0.0, -1.0]])
    temperature = torch.tensor([1.0, 0.5])
    candidates = select_candidates(logits, temperature, None, None, torch.tensor([True, True]),
                                   torch.tensor([2, 5]), None, None)
    stats = candidate_logprob_stats(candidates, temperature, 4)
    for row, keep in ((0, 2), (1, 5)):
        expected = torch.log_softmax(logits[row, :keep].double() / temperature[row].double(), dim=0)
        torch.testing.assert_close(stats.top_logprobs[row, :min(keep, 4)].double(), expected[:4], atol=1e-6, rtol=0)
        assert (stats.top_logprobs[row, keep:] == -math.inf).all()
    # The chosen token's logprob is its own entry among the alternatives, bit for bit.
    chosen = stats.token_logprobs(torch.tensor([1, 3]), candidates.token_ids)
    assert chosen[0] == stats.top_logprobs[0, 1] and chosen[1] == stats.top_logprobs[1, 3]
