"""logit_bias: the row's bias is added to its raw logits; padding and -inf logits stay as they are."""

from __future__ import annotations

import math

import torch

from hearth.kernels import Sampler
from hearth.kernels.logits.logit_bias import apply_logit_bias
from tests.kernels import reference
from tests.kernels.rows import RowParams, build_metadata


def test_bias_matches_reference_and_leaves_other_tokens_untouched():
    generator = torch.Generator().manual_seed(0)
    vocab_size = 1000
    logits = torch.randn(3, vocab_size, generator=generator) * 4
    logits[1, 5] = -math.inf
    biases = [{3: 100.0, 999: -100.0, 500: 0.25}, {5: 7.0, 0: -1.5}, {}]
    rows = [RowParams(logit_bias=b) for b in biases]
    md = build_metadata(rows, vocab_size)

    result = apply_logit_bias(logits.clone(), md.bias_token_ids, md.bias_values)

    for i, row in enumerate(rows):
        expected = reference.processed_logits(logits[i], row)
        torch.testing.assert_close(result[i].double(), expected, rtol=1e-6, atol=1e-5)
        untouched = [t for t in range(vocab_size) if t not in row.logit_bias]
        # Unbiased tokens (including the padding id 0 of rows 0 and 2) keep their exact bits.
        assert torch.equal(result[i, untouched], logits[i, untouched])
    assert result[1, 5] == -math.inf  # -inf plus a finite bias is still banned


def test_plus_100_forces_a_token_for_every_draw():
    vocab_size = 50
    logits = torch.randn(1, vocab_size, generator=torch.Generator().manual_seed(1)) * 3
    target = int(logits[0].argmin())
    num_draws = 2000
    rows = [RowParams(temperature=1.5, top_p=0.95, logit_bias={target: 100.0}, seed=3, position=i)
            for i in range(num_draws)]
    out = Sampler()(logits.expand(num_draws, -1), build_metadata(rows, vocab_size))
    assert (out.token_ids == target).all()


def test_minus_100_bans_a_token_for_greedy_and_random_rows():
    vocab_size = 20
    logits = torch.zeros(1, vocab_size)
    logits[0, 7] = 6.0  # by far the most likely token without the bias
    num_draws = 5000
    rows = [RowParams(temperature=2.0, logit_bias={7: -100.0}, seed=5, position=i) for i in range(num_draws)]
    rows.append(RowParams(temperature=0.0, logit_bias={7: -100.0}))
    out = Sampler()(logits.expand(num_draws + 1, -1), build_metadata(rows, vocab_size))
    assert not (out.token_ids == 7).any()
    assert out.token_ids[-1] == 0  # greedy: the remaining tied maxima go to the lowest id
    # Without the bias the same seeds draw token 7 most of the time: the ban, not luck, removed it.
    unbiased = [RowParams(temperature=2.0, seed=5, position=i) for i in range(num_draws)]
    plain = Sampler()(logits.expand(num_draws, -1), build_metadata(unbiased, vocab_size))
    assert (plain.token_ids == 7).float().mean() > 0.5
