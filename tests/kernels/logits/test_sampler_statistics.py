"""Seeded rows draw from the reference distribution, with independent draws across choices and positions."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from tests.kernels import reference
from tests.kernels.batches import draws, zipf_logits
from tests.kernels.chi_square import goodness_of_fit
from tests.kernels.rows import RowParams

NUM_DRAWS = 20000
SMALL_VOCAB = 40


@pytest.mark.parametrize(
    "row",
    [
        RowParams(seed=1),
        RowParams(temperature=0.6, seed=2),
        RowParams(temperature=0.7, top_p=0.8, seed=3),
        RowParams(temperature=1.5, top_p=0.95, seed=4),
        RowParams(top_k=5, temperature=1.3, seed=5),
        RowParams(min_p=0.1, seed=6),
        RowParams(top_k=12, top_p=0.9, min_p=0.05, temperature=0.9, seed=7),
        RowParams(temperature=1.1, repetition_penalty=1.5, frequency_penalty=0.3, presence_penalty=0.5,
                  prompt_token_ids=(0, 1, 2, 3), output_token_ids=(4, 4, 5), logit_bias={30: 2.0}, seed=8),
    ],
    ids=["plain", "temperature", "top_p", "hot_top_p", "top_k", "min_p", "all_cuts", "penalties_bias"],
)
def test_sampled_frequencies_match_the_reference_distribution(row):
    logits = zipf_logits(1, SMALL_VOCAB, seed=10, scale=1.0)
    counts = torch.bincount(draws(logits[0], row, NUM_DRAWS), minlength=SMALL_VOCAB)
    expected = reference.distribution(logits[0], row)
    assert goodness_of_fit(counts, expected) > 1e-3
    # Power: the same counts reject the distribution of a temperature 15% off.
    nearby = dataclasses.replace(row, temperature=row.temperature * 1.15)
    assert goodness_of_fit(counts, reference.distribution(logits[0], nearby)) < 1e-3


def _pair_counts(first: torch.Tensor, second: torch.Tensor, vocab_size: int) -> torch.Tensor:
    return torch.bincount(first * vocab_size + second, minlength=vocab_size * vocab_size)


def test_choices_of_one_request_are_independent_draws():
    vocab_size = 6
    logits = torch.tensor([[1.0, 0.5, 0.2, 0.0, -0.3, -0.8]])
    probs = reference.softmax(logits[0])
    choice0 = draws(logits[0], RowParams(seed=123, choice_index=0), NUM_DRAWS)
    choice1 = draws(logits[0], RowParams(seed=123, choice_index=1), NUM_DRAWS)
    joint = torch.outer(probs, probs).flatten()
    assert goodness_of_fit(_pair_counts(choice0, choice1, vocab_size), joint) > 1e-3
    # Consecutive seeds are independent streams too.
    seed124 = draws(logits[0], RowParams(seed=124), NUM_DRAWS)
    assert goodness_of_fit(_pair_counts(choice0, seed124, vocab_size), joint) > 1e-3
    # Power: a second stream that copies the first 30% of the time is rejected.
    copying = torch.where(torch.arange(NUM_DRAWS) % 10 < 3, choice0, choice1)
    assert goodness_of_fit(_pair_counts(choice0, copying, vocab_size), joint) < 1e-3


def test_positions_of_one_stream_are_independent_draws():
    vocab_size = 6
    logits = torch.tensor([[1.0, 0.5, 0.2, 0.0, -0.3, -0.8]])
    row = RowParams(seed=77, top_p=0.95)
    tokens = draws(logits[0], row, NUM_DRAWS + 2)
    expected = reference.distribution(logits[0], row)
    joint = torch.outer(expected, expected).flatten()
    for lag in (1, 2):
        pairs = _pair_counts(tokens[:NUM_DRAWS], tokens[lag:NUM_DRAWS + lag], vocab_size)
        assert goodness_of_fit(pairs, joint) > 1e-3
