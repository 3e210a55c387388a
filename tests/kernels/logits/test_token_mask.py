"""Constrained-decoding bitmask and min_tokens bans: exactly the disallowed ids become -inf."""

from __future__ import annotations

import math

import pytest
import torch

from hearth.kernels.logits.token_mask import apply_banned_tokens, apply_token_bitmask, unpack_bitmask
from tests.kernels.rows import RowParams, build_metadata


@pytest.mark.parametrize("vocab_size", [1, 7, 31, 32, 33, 64, 1000])
def test_bitmask_allows_exactly_the_listed_tokens(vocab_size):
    generator = torch.Generator().manual_seed(vocab_size)
    allowed = [
        tuple(sorted(set(torch.randint(0, vocab_size, (5,), generator=generator).tolist()))),
        tuple(t for t in range(vocab_size) if t % 32 == 31 or t == vocab_size - 1),  # the sign bit of each word
        None,  # unconstrained
    ]
    rows = [RowParams(allowed_token_ids=a) for a in allowed]
    md = build_metadata(rows, vocab_size)
    logits = torch.randn(len(rows), vocab_size, generator=generator)

    is_allowed = unpack_bitmask(md.allowed_token_bitmask, vocab_size)
    result = apply_token_bitmask(logits.clone(), md.allowed_token_bitmask)

    for i, ids in enumerate(allowed):
        expected = set(range(vocab_size)) if ids is None else set(ids)
        assert set(is_allowed[i].nonzero().flatten().tolist()) == expected
        kept = sorted(expected)
        dropped = sorted(set(range(vocab_size)) - expected)
        assert torch.equal(result[i, kept], logits[i, kept])
        assert (result[i, dropped] == -math.inf).all()


def test_banned_tokens_become_minus_inf_and_padding_bans_nothing():
    vocab_size = 100
    rows = [RowParams(banned_token_ids=(0, 99, 42)), RowParams(), RowParams(banned_token_ids=(7,))]
    md = build_metadata(rows, vocab_size)
    logits = torch.randn(3, vocab_size, generator=torch.Generator().manual_seed(0))
    result = apply_banned_tokens(logits.clone(), md.banned_token_ids, md.is_banned)
    for i, row in enumerate(rows):
        banned = sorted(row.banned_token_ids)
        others = [t for t in range(vocab_size) if t not in row.banned_token_ids]
        assert (result[i, banned] == -math.inf).all()
        assert torch.equal(result[i, others], logits[i, others])  # row 1's padding id 0 is untouched
