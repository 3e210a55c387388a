"""Counter-based uniforms (splitmix64), temperature and the inverse-CDF draws."""

from __future__ import annotations

import math

import pytest
import torch

from hearth.kernels.logits.sampling import (
    apply_temperature,
    block_cumulative_mass,
    draw_from_candidates,
    draw_from_probs,
    mix64,
    mix64_int,
    stream_key,
    stream_uniforms,
)
from tests.kernels import reference
from tests.kernels.chi_square import goodness_of_fit

GOLDEN = 0x9E3779B97F4A7C15
MASK64 = (1 << 64) - 1
INT64_EDGES = [0, 1, -1, 2**63 - 1, -(2**63), 0x5555555555555555, -0x5555555555555556]


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _random_int64(count: int, seed: int) -> list[int]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(-(2**63), 2**63 - 1, (count,), generator=generator, dtype=torch.int64).tolist()


def _unmix64(value: int) -> int:
    """Inverse of splitmix64's finaliser, to build inputs with a chosen output."""
    def unxorshift(z: int, bits: int) -> int:
        x = z
        for _ in range(64 // bits + 1):
            x = z ^ (x >> bits)
        return x
    value = unxorshift(value & MASK64, 31)
    value = unxorshift((value * pow(0x94D049BB133111EB, -1, 1 << 64)) & MASK64, 27)
    return unxorshift((value * pow(0xBF58476D1CE4E5B9, -1, 1 << 64)) & MASK64, 30)


def test_mix64_int_is_splitmix64():
    # Vigna's splitmix64 from seed 1234567 (published test vector): output n mixes seed + n * golden.
    expected = [6457827717110365317, 3203168211198807973, 9817491932198370423, 4593380528125082431]
    assert reference.splitmix64_outputs(1234567, 4) == expected
    assert [mix64_int(1234567 + (n + 1) * GOLDEN) for n in range(4)] == expected
    assert _unmix64(mix64_int(123456789)) == 123456789


def test_mix64_tensor_equals_python_reference_including_negative_inputs():
    values = INT64_EDGES + _random_int64(5000, 0)
    result = mix64(torch.tensor(values, dtype=torch.int64)).tolist()
    assert result == [_signed(mix64_int(v)) for v in values]


def test_stream_uniforms_equal_the_splitmix64_stream():
    keys = INT64_EDGES + _random_int64(200, 1)
    positions = [0, 1, 2, 7, 100, 4095]
    key_grid = torch.tensor([k for k in keys for _ in positions], dtype=torch.int64)
    pos_grid = torch.tensor(positions * len(keys), dtype=torch.int64)
    result = stream_uniforms(key_grid, pos_grid)
    assert result.dtype == torch.float64
    expected = [reference.uniform(k, p) for k in keys for p in positions]
    assert result.tolist() == expected


def test_uniforms_lie_in_the_half_open_unit_interval():
    # Keys whose state at position 0 mixes to all ones (the largest output) and to zero.
    key_to_max = _signed((_unmix64(MASK64) - GOLDEN) & MASK64)
    key_to_zero = _signed((_unmix64(0) - GOLDEN) & MASK64)
    u = stream_uniforms(torch.tensor([key_to_max, key_to_zero]), torch.tensor([0, 0]))
    assert u.tolist() == [1.0 - 2.0**-53, 0.0]
    many = stream_uniforms(torch.tensor(_random_int64(100_000, 2)), torch.arange(100_000))
    assert (many >= 0).all() and (many < 1).all()


def test_stream_key_is_a_function_of_seed_and_choice():
    assert stream_key(42, 0) == _signed(mix64_int(mix64_int(42)))
    assert stream_key(42, 3) == _signed(mix64_int(mix64_int(42) + 3))
    keys = {stream_key(seed, choice) for seed in (-1, 0, 1, 2, 2**63, 2**64 - 1) for choice in range(8)}
    assert len(keys) == 6 * 8 - 8  # 2**64 - 1 and -1 are the same seed modulo 2**64, nothing else collides
    assert all(-(2**63) <= k < 2**63 for k in keys)


def test_uniforms_are_uniform_and_consecutive_positions_independent():
    num_keys, num_positions = 200, 100
    keys = torch.tensor(_random_int64(num_keys, 3)).repeat_interleave(num_positions)
    positions = torch.arange(num_positions).repeat(num_keys)
    u = stream_uniforms(keys, positions).reshape(num_keys, num_positions)
    bins = (u * 64).long()
    assert goodness_of_fit(torch.bincount(bins.flatten(), minlength=64), torch.full((64,), 1 / 64)) > 1e-3
    # Pairs (position t, position t + 1) of one stream fall uniformly into an 8 x 8 grid.
    coarse = (u * 8).long()
    pairs = (coarse[:, :-1] * 8 + coarse[:, 1:]).flatten()
    assert goodness_of_fit(torch.bincount(pairs, minlength=64), torch.full((64,), 1 / 64)) > 1e-3


def test_temperature_divides_each_row_by_its_own_value():
    logits = torch.randn(3, 50, generator=torch.Generator().manual_seed(0))
    temperature = torch.tensor([1.0, 0.5, 1e-4])
    result = apply_temperature(logits.clone(), temperature)
    for i, t in enumerate(temperature.tolist()):
        torch.testing.assert_close(result[i].double(), logits[i].double() / t, rtol=1e-6, atol=0)


def _inverse_cdf(probs: list[float], u: float) -> int:
    """Smallest id whose cumulative (float64) mass exceeds u * total."""
    target = u * math.fsum(probs)
    cum = 0.0
    for token, p in enumerate(probs):
        cum += p
        if cum > target and p > 0:
            return token
    return max(t for t, p in enumerate(probs) if p > 0)


@pytest.mark.parametrize("vocab_size", [1, 7, 64, 65, 1000, 32001])
def test_draw_from_probs_is_the_inverse_cdf_in_id_order(vocab_size):
    generator = torch.Generator().manual_seed(vocab_size)
    num_seqs = 40
    logits = torch.randn(num_seqs, vocab_size, generator=generator) * 2
    logits[::3, ::2] = -math.inf  # zero-probability tokens between positive ones
    logits[:, -1] = 1.0  # keep at least one positive token per row
    probs = torch.softmax(logits, dim=1)
    u = torch.rand(num_seqs, generator=generator, dtype=torch.float64)
    u[0], u[1] = 0.0, 1.0 - 2.0**-53  # the extreme uniforms
    token_ids = draw_from_probs(probs, block_cumulative_mass(probs), u)
    for i in range(num_seqs):
        assert probs[i, token_ids[i]] > 0
        row = probs[i].double().tolist()
        if abs(u[i].item() - 0.5) < 0.49:  # away from the ends, where float32 block sums may round differently
            assert token_ids[i].item() == _inverse_cdf(row, u[i].item())
    # u = 0 takes the first positive token; u -> 1 the last one.
    assert token_ids[0].item() == int((probs[0] > 0).nonzero()[0])
    assert token_ids[1].item() == int((probs[1] > 0).nonzero()[-1])


def test_draw_from_candidates_is_the_inverse_cdf_over_the_kept_prefix():
    generator = torch.Generator().manual_seed(0)
    num_seqs, width = 50, 30
    probs = torch.sort(torch.rand(num_seqs, width, generator=generator), dim=1, descending=True).values
    probs[:5, 20:] = 0.0
    ids = torch.stack([torch.randperm(1000, generator=generator)[:width] for _ in range(num_seqs)])
    keep_len = torch.randint(1, width + 1, (num_seqs,), generator=generator)
    u = torch.rand(num_seqs, generator=generator, dtype=torch.float64)
    u[0], u[1] = 0.0, 1.0 - 2.0**-53
    result = draw_from_candidates(probs, ids, keep_len, u)
    for i in range(num_seqs):
        kept = probs[i, : keep_len[i]].double().tolist()
        pos = _inverse_cdf(kept, u[i].item())
        assert result[i].item() == ids[i, pos].item()
