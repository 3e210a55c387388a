"""Blockwise top-k and argmax are exact: the same values as a full sort, ties of argmax to the lowest id."""

from __future__ import annotations

import math

import pytest
import torch

from hearth.kernels.logits.blockwise import BLOCK_SIZE, argmax_blockwise, block_reduce, topk_blockwise
from tests.kernels import reference

VOCAB_SIZES = [1, 7, 63, 64, 65, 1000, 32001, 50257]


@pytest.mark.parametrize("vocab_size", VOCAB_SIZES)
def test_block_reduce_covers_the_short_last_block(vocab_size):
    x = torch.rand(3, vocab_size, generator=torch.Generator().manual_seed(vocab_size), dtype=torch.float64)
    num_blocks = -(-vocab_size // BLOCK_SIZE)
    expected_max = torch.stack([x[:, b * BLOCK_SIZE:(b + 1) * BLOCK_SIZE].amax(1) for b in range(num_blocks)], 1)
    assert torch.equal(block_reduce(x, "max"), expected_max)
    torch.testing.assert_close(block_reduce(x, "sum").sum(1), x.sum(1))


@pytest.mark.parametrize("vocab_size", VOCAB_SIZES)
@pytest.mark.parametrize("k", [1, 5, 20, 64, 200])
def test_topk_equals_full_sort(vocab_size, k):
    generator = torch.Generator().manual_seed(vocab_size * 1000 + k)
    x = torch.randn(4, vocab_size, generator=generator)
    x[1] = x[1] * 0.01  # flat row
    x[2, torch.randint(0, vocab_size, (vocab_size // 3,), generator=generator)] = -math.inf
    values, ids = topk_blockwise(x, k)
    num = min(k, vocab_size)
    expected = torch.sort(x.double(), dim=1, descending=True).values[:, :num]
    assert values.shape == (4, num)
    assert torch.equal(values.double(), expected)
    assert torch.equal(x.gather(1, ids), values)
    finite = values > -math.inf
    for row in range(4):  # distinct ids (ties among -inf may pick any id, but never the same twice)
        row_ids = ids[row][finite[row]].tolist()
        assert len(set(row_ids)) == len(row_ids)


def test_topk_is_exact_on_a_llama3_sized_vocabulary():
    vocab_size = 128256
    generator = torch.Generator().manual_seed(7)
    x = torch.randn(3, vocab_size, generator=generator)
    x[0, 128255] = 50.0  # the maximum in the last block
    x[1, :64] = 40.0 + torch.arange(64.0)  # all top values in one block
    for k in (1, 20, 64, 1000):
        values, ids = topk_blockwise(x, k)
        expected_values, _ = torch.topk(x, k, dim=1)
        assert torch.equal(values, expected_values)
        assert torch.equal(x.gather(1, ids), values)
        assert all(len(set(r)) == k for r in ids.tolist())


@pytest.mark.parametrize("vocab_size", VOCAB_SIZES + [128256])
def test_argmax_ties_go_to_the_lowest_id(vocab_size):
    generator = torch.Generator().manual_seed(vocab_size)
    x = torch.randn(6, vocab_size, generator=generator)
    last = vocab_size - 1
    x[1] = 0.0  # every token tied
    x[2, [last, last // 2, max(last - 1, 0)]] = 9.0  # ties spread over blocks, including the short tail
    x[3] = -math.inf  # all -inf: id 0, like torch.argmax
    x[4] = -math.inf
    x[4, last] = -3.0  # all -inf but the last token
    x[5, ::3] = 5.0  # ties inside every block
    result = argmax_blockwise(x)
    expected = [reference.greedy_token(row) for row in x.double()]
    assert result.tolist() == expected


@pytest.mark.parametrize("vocab_size", [50257, 128256])
@pytest.mark.parametrize("placement", ["one_block", "spread", "every_16th", "tail", "ties"])
def test_topk_is_exact_wherever_the_largest_values_sit(vocab_size, placement):
    """The largest values packed into one run of ids, spread one per block, on a regular stride, in the
    short last block, or all tied: no block layout may lose one of them."""
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(2, vocab_size, generator=generator)
    if placement == "one_block":
        hot = torch.arange(1000, 1100)
    elif placement == "spread":
        hot = torch.arange(5, vocab_size, BLOCK_SIZE)[:100]
    elif placement == "every_16th":
        hot = torch.arange(3, vocab_size, 16)[:100]
    elif placement == "tail":
        hot = torch.arange(vocab_size - (vocab_size % BLOCK_SIZE or BLOCK_SIZE), vocab_size)
    else:
        hot = torch.arange(0, vocab_size, 997)
    x[:, hot] = 2.0 if placement == "ties" else 2.0 + torch.rand(hot.numel(), generator=generator)
    for k in (1, 20, 64):
        values, ids = topk_blockwise(x, k)
        assert torch.equal(values, torch.topk(x, k, dim=1).values)
        assert torch.equal(x.gather(1, ids), values)
        assert all(len(set(r)) == k for r in ids.tolist())


def test_refresh_block_max_equals_a_fresh_pass_after_sparse_changes():
    from hearth.kernels.logits.blockwise import block_reduce, refresh_block_max

    generator = torch.Generator().manual_seed(8)
    for vocab_size in (1000, 32001):
        x = torch.randn(3, vocab_size, generator=generator)
        ids = torch.randint(0, vocab_size, (3, 40), generator=generator)
        changed = x.clone()
        changed.scatter_(1, ids, torch.randn(3, 40, generator=generator) * 10)
        refreshed = refresh_block_max(block_reduce(x, "max"), changed, ids)
        assert torch.equal(refreshed, block_reduce(changed, "max"))
