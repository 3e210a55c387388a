"""The Triton draw uses hearth.kernels.logits.sampling's splitmix64 stream bit for bit, and picks the torch path's token
from the same probabilities."""

from __future__ import annotations

import torch

from hearth.kernels.logits.blockwise import block_reduce
from hearth.kernels.logits.sampling import (
    block_cumulative_mass,
    draw_from_candidates,
    draw_from_probs,
    stream_key,
    stream_uniforms,
)
from hearth.kernels.logits.truncation import candidate_weights
from hearth.kernels.triton import draw
from tests.kernels.batches import zipf_logits
from tests.kernels.triton.conftest import DEVICE

NUM_POSITIONS = 32


def streams(num_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys and positions of num_rows rows x NUM_POSITIONS positions (row-major)."""
    keys = torch.tensor([stream_key(seed, seed % 3) for seed in range(num_rows)], dtype=torch.int64)
    keys = keys.repeat_interleave(NUM_POSITIONS)
    positions = torch.arange(NUM_POSITIONS, dtype=torch.int64).repeat(num_rows)
    return keys.to(DEVICE), positions.to(DEVICE)


def test_uniforms_are_the_torch_stream_bit_for_bit():
    keys = torch.tensor([0, 1, -1, 2**63 - 1, -(2**63), stream_key(1234, 2), stream_key(7, 0)], dtype=torch.int64)
    positions = torch.tensor([0, 1, 2**40, 5, 17, 0, 2**31 + 3], dtype=torch.int64)
    expected = stream_uniforms(keys, positions)
    assert torch.equal(draw.stream_uniforms(keys.to(DEVICE), positions.to(DEVICE)).cpu(), expected)


def test_whole_vocabulary_draws_pick_the_torch_token_from_the_same_probs():
    logits = zipf_logits(4, 1000, seed=3, scale=0.5)  # flat enough that draws spread over many tokens
    logits[2, 500:] = -float("inf")  # zero probabilities, a whole zero tail block among them
    probs = torch.softmax(logits / torch.tensor([[1.0], [0.8], [1.3], [2.0]]), 1)
    probs = probs.repeat_interleave(NUM_POSITIONS, 0).to(DEVICE)
    keys, positions = streams(4)
    expected = draw_from_probs(probs, block_cumulative_mass(probs), stream_uniforms(keys, positions))
    result = draw.draw_from_probs(probs, block_reduce(probs, "sum"), keys, positions)
    assert torch.equal(result, expected)
    assert len(set(result.tolist())) > 50


def test_candidate_draws_pick_the_torch_token_from_the_same_weights():
    logits = torch.sort(zipf_logits(4, 300, seed=4, scale=0.4), dim=1, descending=True)
    values, ids = (t.repeat_interleave(NUM_POSITIONS, 0).to(DEVICE) for t in logits)
    weights = candidate_weights(values, torch.ones(values.shape[0], device=DEVICE))
    keep_len = torch.tensor([1, 5, 64, 300], dtype=torch.int64).repeat_interleave(NUM_POSITIONS).to(DEVICE)
    keys, positions = streams(4)
    expected = draw_from_candidates(weights, ids, keep_len, stream_uniforms(keys, positions))
    result = draw.draw_from_candidates(weights, ids, keep_len, keys, positions)
    assert torch.equal(result, expected)
    assert (result[:NUM_POSITIONS] == ids[0, 0]).all()
