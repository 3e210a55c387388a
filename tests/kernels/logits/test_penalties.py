"""Repetition (prompt + output) and frequency / presence (output only) penalties against loop references."""

from __future__ import annotations

import math

import pytest
import torch

from hearth.kernels.logits.penalties import apply_frequency_presence_penalties, apply_repetition_penalty
from tests.kernels import reference
from tests.kernels.rows import RowParams, build_metadata

VOCAB_SIZE = 97


def _logits(seed: int, num_seqs: int) -> torch.Tensor:
    logits = torch.randn(num_seqs, VOCAB_SIZE, generator=torch.Generator().manual_seed(seed)) * 5
    logits[:, 10] = 0.0  # a zero logit is "non-positive": multiplied, so it stays 0
    logits[:, 11] = -math.inf  # a banned token stays banned
    return logits


def _unseen(row: RowParams) -> list[int]:
    seen = set(row.prompt_token_ids) | set(row.output_token_ids)
    return [t for t in range(VOCAB_SIZE) if t not in seen]


ROWS = [
    RowParams(repetition_penalty=1.3, prompt_token_ids=(1, 2, 3, 10, 11), output_token_ids=(3, 3, 40, 96)),
    RowParams(repetition_penalty=0.7, prompt_token_ids=(50, 51), output_token_ids=()),
    RowParams(repetition_penalty=1.0, prompt_token_ids=(4,), output_token_ids=(4, 5)),
    RowParams(repetition_penalty=2.0, prompt_token_ids=tuple(range(0, 90, 3)), output_token_ids=(1, 1, 1, 2)),
]


def test_repetition_penalty_matches_reference():
    logits = _logits(0, len(ROWS))
    md = build_metadata(ROWS, VOCAB_SIZE)
    result = apply_repetition_penalty(logits.clone(), md.seen_token_ids, md.repetition_penalty)
    for i, row in enumerate(ROWS):
        torch.testing.assert_close(result[i].double(), reference.processed_logits(logits[i], row), rtol=1e-6, atol=1e-6)
        # Tokens never seen keep their exact values.
        assert torch.equal(result[i, _unseen(row)], logits[i, _unseen(row)])
    # Direction: a penalty > 1 makes a seen positive logit smaller and a seen negative one more negative.
    seen_positive = [t for t in ROWS[0].prompt_token_ids if logits[0, t] > 0]
    seen_negative = [t for t in ROWS[0].prompt_token_ids if -math.inf < logits[0, t] < 0]
    assert (result[0, seen_positive] < logits[0, seen_positive]).all()
    assert (result[0, seen_negative] < logits[0, seen_negative]).all()
    assert result[0, 10] == 0.0 and result[0, 11] == -math.inf


@pytest.mark.parametrize("frequency, presence", [(0.5, 0.0), (0.0, 1.5), (0.8, -0.4), (-2.0, 2.0)])
def test_frequency_presence_penalties_match_reference(frequency, presence):
    rows = [
        RowParams(frequency_penalty=frequency, presence_penalty=presence, output_token_ids=(3, 3, 3, 7, 11, 96)),
        RowParams(frequency_penalty=frequency, presence_penalty=presence, output_token_ids=()),  # first step
        RowParams(output_token_ids=(5, 5)),  # penalties off: must stay untouched despite its counts
        RowParams(frequency_penalty=frequency, presence_penalty=presence, output_token_ids=(0, 0, 1)),
    ]
    logits = _logits(1, len(rows))
    md = build_metadata(rows, VOCAB_SIZE)
    result = apply_frequency_presence_penalties(
        logits.clone(), md.output_token_ids, md.output_token_counts, md.frequency_penalty, md.presence_penalty
    )
    for i, row in enumerate(rows):
        torch.testing.assert_close(result[i].double(), reference.processed_logits(logits[i], row), rtol=1e-6, atol=1e-6)
        # Prompt-only or unseen tokens are never touched by frequency/presence.
        assert torch.equal(result[i, _unseen(row)], logits[i, _unseen(row)])
    assert torch.equal(result[1], logits[1]) and torch.equal(result[2], logits[2])
    # Count 3 costs three times the frequency penalty plus presence once.
    expected_drop = 3 * frequency + presence
    assert result[0, 3].item() == pytest.approx(logits[0, 3].item() - expected_drop, abs=1e-5)
    assert result[0, 11] == -math.inf


def test_penalties_on_tokens_never_seen_change_nothing():
    rows = [RowParams(repetition_penalty=1.5, frequency_penalty=1.0, presence_penalty=1.0)]
    logits = _logits(2, 1)
    md = build_metadata(rows, VOCAB_SIZE, include_every_stage=True)
    result = apply_repetition_penalty(logits.clone(), md.seen_token_ids, md.repetition_penalty)
    result = apply_frequency_presence_penalties(
        result, md.output_token_ids, md.output_token_counts, md.frequency_penalty, md.presence_penalty
    )
    assert torch.equal(result, logits)
