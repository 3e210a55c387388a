"""Truncation keeps exactly the reference's tokens: top_k, then top_p over the renormalised top_k
survivors, then min_p, computed here by a full float64 sort and cumsum of the softmax of the same logits."""

from __future__ import annotations

import math

import pytest
import torch

from hearth.kernels.logits.sampling import block_cumulative_mass
from hearth.kernels.logits.truncation import INITIAL_CANDIDATES, is_truncated, select_candidates
from tests.kernels import reference

# (top_k, top_p, min_p); None = off.
PARAMS = [
    (None, 0.9, 0.0),
    (None, 0.5, 0.0),
    (None, 0.999, 0.0),
    (None, 1e-6, 0.0),  # only the most likely token
    (None, 1.0, 0.05),
    (None, 1.0, 0.5),
    (40, 1.0, 0.0),
    (1, 1.0, 0.0),
    (500, 1.0, 0.0),  # more than the initial candidates
    (50, 0.8, 0.0),
    (700, 0.95, 0.0),  # top_p over survivors of a top_k beyond the initial candidates
    (300, 0.9, 0.02),
    (None, 0.95, 0.01),
    (None, 1.0, 1e-5),  # min_p keeping most of a flat row
]


def _rows(vocab_size: int, num_seqs: int, seed: int) -> torch.Tensor:
    """float32 logits of varied shapes: peaked, LM-like (Zipf) and flat rows."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(num_seqs, vocab_size, generator=generator, dtype=torch.float64)
    ranks = torch.arange(1, vocab_size + 1, dtype=torch.float64)
    for i in range(num_seqs):
        shape = i % 3
        if shape == 0:
            logits[i] *= 4.0
        elif shape == 1:
            perm = torch.randperm(vocab_size, generator=generator)
            logits[i] = (-1.1 * ranks.log())[perm] * 2.0 + 0.1 * logits[i]
        else:
            logits[i] *= 0.05
    return logits.float()


def _probs(logits: torch.Tensor) -> torch.Tensor:
    """The float64 reference distribution of float32 logits."""
    return torch.softmax(logits.double(), dim=1)


def _select(logits, is_row_truncated, top_k, top_p, min_p, total_weight=True, temperature=None):
    """select_candidates with the whole tempered distribution known (as the sampler passes it) or not."""
    if temperature is None:
        temperature = torch.ones(logits.shape[0])
    probs = block_cum = None
    if total_weight:
        probs = torch.softmax(logits / temperature.unsqueeze(1), dim=1)
        block_cum = block_cumulative_mass(probs)
    return select_candidates(logits, temperature, probs, block_cum, is_row_truncated, top_k, top_p, min_p)


def _metadata(params: list[tuple], vocab_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    top_k = torch.tensor([vocab_size if k is None else min(k, vocab_size) for k, _, _ in params])
    top_p = torch.tensor([p for _, p, _ in params], dtype=torch.float32)
    min_p = torch.tensor([m for _, _, m in params], dtype=torch.float32)
    return top_k, top_p, min_p


def _kept(candidates, row: int) -> list[int]:
    return candidates.token_ids[row, : candidates.keep_len[row]].tolist()


def _assert_keeps(candidates, row: int, probs: torch.Tensor, expected: list[int]) -> None:
    """The kept ids are distinct and carry the same probabilities as the reference's, most likely first.

    Equal float32 probabilities (common in flat rows) may be ordered either way, so a tie at the cut may
    keep either id: the kept probabilities, not the ids, must match exactly.
    """
    kept = _kept(candidates, row)
    assert len(set(kept)) == len(kept) == len(expected)
    assert torch.equal(probs[kept], probs[expected])
    # The weights are the kept probabilities relative to the most likely token's.
    torch.testing.assert_close(candidates.weights[row, : len(kept)].double(), probs[kept] / probs.max(),
                               rtol=1e-5, atol=1e-12)


@pytest.mark.parametrize("vocab_size", [1, 7, 1000, 32001])
def test_kept_sets_match_full_sort_reference(vocab_size):
    params = [p for p in PARAMS for _ in range(3)]  # each with a peaked, an LM-like and a flat row
    logits = _rows(vocab_size, len(params), seed=vocab_size)
    probs = _probs(logits)
    top_k, top_p, min_p = _metadata(params, vocab_size)
    is_row_truncated = is_truncated(vocab_size, top_k, top_p, min_p)
    candidates = _select(logits, is_row_truncated, top_k, top_p, min_p)
    for i, (k, _, _) in enumerate(params):
        expected = reference.kept_tokens(probs[i], k, float(top_p[i]), float(min_p[i]))
        if is_row_truncated[i]:
            _assert_keeps(candidates, i, probs[i], expected)
        else:
            assert len(expected) == vocab_size  # nothing to cut: the row is drawn from the whole vocabulary


def test_edges_top_p_one_and_tiny():
    vocab_size = 1000
    logits = _rows(vocab_size, 6, seed=1)
    top_k = torch.full((6,), vocab_size)
    top_p = torch.tensor([1.0, 1.0, 1.0, 1e-6, 1e-6, 1e-6])
    min_p = torch.zeros(6)
    is_row_truncated = is_truncated(vocab_size, top_k, top_p, min_p)
    assert is_row_truncated.tolist() == [False] * 3 + [True] * 3
    candidates = _select(logits, is_row_truncated, top_k, top_p, min_p)
    assert candidates.keep_len[3:].tolist() == [1, 1, 1]
    assert candidates.token_ids[3:, 0].tolist() == logits[3:].argmax(1).tolist()


def test_top_p_keeps_the_smallest_prefix_reaching_it():
    # 0.5 + 0.25 reaches 0.75 exactly with two tokens (all binary fractions: no rounding); 0.76 needs a third.
    probs = torch.tensor([[0.25, 0.5, 0.1875, 0.0625], [0.25, 0.5, 0.1875, 0.0625]])
    top_p = torch.tensor([0.75, 0.76])
    candidates = _select(probs.log(), torch.tensor([True, True]), None, top_p, None)
    assert _kept(candidates, 0) == [1, 0]
    assert _kept(candidates, 1) == [1, 0, 2]


def test_top_p_is_over_the_top_k_survivors_renormalised():
    probs = torch.tensor([[0.4, 0.3, 0.2, 0.1]])
    # Over the whole row 0.4 + 0.3 = 0.7 < 0.75, but over the top 2 (mass 0.7) the first reaches 0.57 and
    # the two reach 1.0: both are kept. With top_k 3 (mass 0.9) 0.7 / 0.9 = 0.78 reaches 0.75 too.
    for k, expected in ((2, [0, 1]), (3, [0, 1]), (4, [0, 1, 2])):
        candidates = _select(probs.log(), torch.tensor([True]), torch.tensor([k]), torch.tensor([0.75]), None)
        assert _kept(candidates, 0) == expected
    candidates = _select(probs.log(), torch.tensor([True]), torch.tensor([2]), torch.tensor([0.5]), None)
    assert _kept(candidates, 0) == [0]  # 0.4 / 0.7 = 0.57 >= 0.5


def test_min_p_is_relative_to_the_most_likely_token():
    probs = torch.tensor([[0.05, 0.4, 0.201, 0.19, 0.159]])
    candidates = _select(probs.log(), torch.tensor([True]), None, None, torch.tensor([0.5]))
    assert _kept(candidates, 0) == [1, 2]  # 0.19 < 0.5 * 0.4 < 0.201


def test_a_row_keeps_the_same_set_alone_and_in_any_batch():
    vocab_size = 5000
    params = PARAMS
    logits = _rows(vocab_size, len(params), seed=3)
    top_k, top_p, min_p = _metadata(params, vocab_size)
    is_row_truncated = is_truncated(vocab_size, top_k, top_p, min_p)
    together = _select(logits, is_row_truncated, top_k, top_p, min_p)
    for i in range(len(params)):
        alone = _select(logits[i:i + 1], is_row_truncated[i:i + 1], top_k[i:i + 1], top_p[i:i + 1], min_p[i:i + 1])
        assert _kept(alone, 0) == _kept(together, i)  # same ids even among ties: same row, same work
        assert torch.equal(alone.weights[0, : alone.keep_len[0]], together.weights[i, : together.keep_len[i]])
        assert torch.equal(alone.kept_weight[0], together.kept_weight[i])


def test_flat_rows_grow_the_candidates_past_the_initial_count():
    vocab_size = 20000
    logits = torch.randn(2, vocab_size, generator=torch.Generator().manual_seed(4)) * 0.01
    probs = _probs(logits)
    top_p = torch.tensor([0.5, 0.999])
    candidates = _select(logits, torch.tensor([True, True]), None, top_p, None)
    for i in range(2):
        expected = reference.kept_tokens(probs[i], None, float(top_p[i]), 0.0)
        assert len(expected) > INITIAL_CANDIDATES * 8
        _assert_keeps(candidates, i, probs[i], expected)


def test_zero_probability_tokens_are_never_needed_for_top_p():
    probs = torch.zeros(1, 300)
    probs[0, [5, 200, 299]] = torch.tensor([0.5, 0.3, 0.2])
    candidates = _select(probs.log(), torch.tensor([True]), None, torch.tensor([0.999]), None)
    assert sorted(_kept(candidates, 0)) == [5, 200, 299]
    assert math.isclose(candidates.kept_weight[0].item(), 1.0 / 0.5, rel_tol=1e-6)


def test_top_p_without_a_total_grows_to_the_whole_vocabulary_and_stays_exact():
    logits = _rows(3000, 3, seed=9)
    probs = _probs(logits)
    top_p = torch.full((3,), 0.9)
    candidates = _select(logits, torch.tensor([True] * 3), None, top_p, None, total_weight=False)
    for i in range(3):
        _assert_keeps(candidates, i, probs[i], reference.kept_tokens(probs[i], None, 0.9, 0.0))


def test_temperature_tempers_candidates_like_the_whole_distribution():
    logits = _rows(2000, 3, seed=5)
    temperature = torch.tensor([0.5, 1.0, 1.7])
    top_p = torch.full((3,), 0.8)
    candidates = _select(logits, torch.tensor([True] * 3), None, top_p, None, temperature=temperature)
    probs = _probs(logits / temperature.unsqueeze(1))
    for i in range(3):
        _assert_keeps(candidates, i, probs[i], reference.kept_tokens(probs[i], None, 0.8, 0.0))
