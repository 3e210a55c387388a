"""The Triton candidate search keeps the torch path's prefix for top_k, top_p and min_p."""

from __future__ import annotations

import pytest
import torch

from hearth.kernels.logits import truncation
from hearth.kernels.logits.blockwise import block_reduce, topk_blockwise
from hearth.kernels.triton.truncation import kept_prefix, select_candidates
from tests.kernels.batches import zipf_logits
from tests.kernels.triton.conftest import DEVICE

VOCAB_SIZE = 1000
# (top_k, top_p, min_p) per row, vocab_size = top_k off: settled and unsettled rows of every kind.
CUTS = [(VOCAB_SIZE, 0.9, 0.0), (20, 1.0, 0.0), (200, 0.95, 0.0), (VOCAB_SIZE, 1.0, 0.05), (50, 0.9, 0.05),
        (VOCAB_SIZE, 0.999, 0.0), (1, 0.5, 0.5), (64, 1.0, 0.0)]


def cut_tensors(cuts):
    top_k, top_p, min_p = zip(*cuts)
    return (torch.tensor(top_k, device=DEVICE), torch.tensor(top_p, device=DEVICE),
            torch.tensor(min_p, device=DEVICE))


@pytest.mark.parametrize("has_total", [False, True])
def test_kept_prefix_is_the_torch_one(has_total):
    logits = zipf_logits(len(CUTS), VOCAB_SIZE, seed=21, scale=0.8).to(DEVICE)
    temperature = torch.linspace(0.5, 1.5, len(CUTS), device=DEVICE)
    values = topk_blockwise(logits, 64)[0]
    total = None
    if has_total:
        probs = torch.softmax(logits / temperature.unsqueeze(1), 1)
        total = probs.double().sum(1) / probs.amax(1).double()
    top_k, top_p, min_p = cut_tensors(CUTS)
    weights, keep_len, kept_weight, is_settled = kept_prefix(values, temperature, total, VOCAB_SIZE, top_k, top_p,
                                                             min_p)
    expected_weights = truncation.candidate_weights(values, temperature)
    expected = truncation._kept_prefix(expected_weights, total, VOCAB_SIZE, top_k, top_p, min_p)
    torch.testing.assert_close(weights, expected_weights, rtol=2e-6, atol=1e-7)
    assert torch.equal(keep_len, expected[0])
    torch.testing.assert_close(kept_weight, expected[1], rtol=1e-6, atol=0)
    assert torch.equal(is_settled, expected[2])
    assert not is_settled.all() and is_settled.any()


def test_select_candidates_keeps_the_torch_prefix_growing_unsettled_rows():
    logits = zipf_logits(len(CUTS), VOCAB_SIZE, seed=22, scale=0.3).to(DEVICE)  # flat: rows must grow
    temperature = torch.full((len(CUTS),), 0.9, device=DEVICE)
    probs = torch.softmax(logits / temperature.unsqueeze(1), 1)
    block_cum = block_reduce(probs, "sum").double().cumsum(1)
    top_k, top_p, min_p = cut_tensors(CUTS)
    is_truncated = truncation.is_truncated(VOCAB_SIZE, top_k, top_p, min_p)
    expected = truncation.select_candidates(logits, temperature, probs, block_cum, is_truncated, top_k, top_p, min_p)
    result = select_candidates(logits, temperature, block_cum[:, -1], probs, is_truncated, top_k, top_p, min_p,
                               block_reduce(logits, "max"))
    assert torch.equal(result.keep_len, expected.keep_len)
    assert expected.token_ids.shape[1] > 64  # some row grew
    for i, n in enumerate(expected.keep_len.tolist()):
        assert torch.equal(result.token_ids[i, :n], expected.token_ids[i, :n])
