"""Whole-row statistics and the tempered softmax, each in one pass per row (one program per row).

row_stats: block maxima of x (BLOCK_SIZE = hearth.kernels.logits.blockwise.BLOCK_SIZE tokens a block, for the blockwise
top-k and argmax), and the row max and sum of exp of y = x / T, online: log-sum-exp = max + log(sum).
tempered_softmax: probs = exp(y - max) / sum from those statistics, and float32 block sums of probs (what
hearth.kernels.logits.sampling.block_cumulative_mass sums up).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from hearth.kernels.logits.blockwise import BLOCK_SIZE

# Blocks of BLOCK_SIZE tokens per loop step: a [BLOCKS, BLOCK_SIZE] tile, 2048 tokens.
BLOCKS = 32


@triton.jit
def _row_stats_kernel(x_ptr, temp_ptr, bmax_ptr, max_ptr, sum_ptr, vocab_size, x_stride, num_blocks,
                      HAS_T: tl.constexpr, BLOCKS: tl.constexpr, BLOCK_SIZE: tl.constexpr):
    # grid (num_seqs,): x [num_seqs, vocab] -> bmax [num_seqs, num_blocks] f32, max, sum [num_seqs] f32
    row = tl.program_id(0).to(tl.int64)
    t = tl.load(temp_ptr + row) if HAS_T else 1.0
    b = tl.arange(0, BLOCKS)
    o = tl.arange(0, BLOCK_SIZE)
    m = tl.full([], float("-inf"), tl.float32)
    s = tl.zeros([], tl.float32)
    for c0 in range(0, num_blocks, BLOCKS):
        blk = c0 + b
        cols = blk[:, None] * BLOCK_SIZE + o[None, :]  # [BLOCKS, BLOCK_SIZE]
        x = tl.load(x_ptr + row * x_stride + cols, mask=cols < vocab_size, other=float("-inf")).to(tl.float32)
        tl.store(bmax_ptr + row * num_blocks + blk, tl.max(x, axis=1), mask=blk < num_blocks)
        y = tl.math.div_rn(x, t) if HAS_T else x
        m_new = tl.maximum(m, tl.max(y))
        is_empty = m_new == float("-inf")  # nothing finite yet: keep the sum at 0 (no -inf - -inf)
        scale = tl.where(is_empty, 0.0, tl.exp(m - m_new))
        p = tl.where(y == float("-inf"), 0.0, tl.exp(y - tl.where(is_empty, 0.0, m_new)))
        s = s * scale + tl.sum(p)
        m = m_new
    tl.store(max_ptr + row, m)
    tl.store(sum_ptr + row, s)


@triton.jit
def _softmax_kernel(x_ptr, temp_ptr, max_ptr, sum_ptr, probs_ptr, bsum_ptr, vocab_size, x_stride, p_stride,
                    num_blocks, HAS_T: tl.constexpr, BLOCKS: tl.constexpr, BLOCK_SIZE: tl.constexpr):
    # grid (num_seqs,): probs [num_seqs, vocab] f32 = exp(x / T - max) / sum; bsum [num_seqs, num_blocks] f32
    row = tl.program_id(0).to(tl.int64)
    t = tl.load(temp_ptr + row) if HAS_T else 1.0
    m = tl.load(max_ptr + row)
    s = tl.load(sum_ptr + row)
    b = tl.arange(0, BLOCKS)
    o = tl.arange(0, BLOCK_SIZE)
    for c0 in range(0, num_blocks, BLOCKS):
        blk = c0 + b
        cols = blk[:, None] * BLOCK_SIZE + o[None, :]
        inside = cols < vocab_size
        x = tl.load(x_ptr + row * x_stride + cols, mask=inside, other=float("-inf")).to(tl.float32)
        y = tl.math.div_rn(x, t) if HAS_T else x
        p = tl.where(y == float("-inf"), 0.0, tl.exp(y - m)) / s
        tl.store(probs_ptr + row * p_stride + cols, p, mask=inside)
        tl.store(bsum_ptr + row * num_blocks + blk, tl.sum(p, axis=1), mask=blk < num_blocks)


def _rows(x: Tensor) -> Tensor:
    return x if x.stride(1) == 1 else x.contiguous()


def row_stats(x: Tensor, temperature: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """x [num_seqs, vocab] (any float dtype) -> (block maxima of x [num_seqs, num_blocks], max of x / T
    [num_seqs], sum of exp(x / T - max) [num_seqs]), float32; T = 1 when temperature is None. No host sync."""
    x = _rows(x)
    num_seqs, vocab_size = x.shape
    num_blocks = triton.cdiv(vocab_size, BLOCK_SIZE)
    block_max = torch.empty(num_seqs, num_blocks, dtype=torch.float32, device=x.device)
    row_max = torch.empty(num_seqs, dtype=torch.float32, device=x.device)
    sum_exp = torch.empty(num_seqs, dtype=torch.float32, device=x.device)
    temp = temperature.float().contiguous() if temperature is not None else row_max
    _row_stats_kernel[(num_seqs,)](x, temp, block_max, row_max, sum_exp, vocab_size, x.stride(0), num_blocks,
                                   HAS_T=temperature is not None, BLOCKS=BLOCKS, BLOCK_SIZE=BLOCK_SIZE)
    return block_max, row_max, sum_exp


def tempered_softmax(x: Tensor, temperature: Tensor | None, row_max: Tensor, sum_exp: Tensor,
                     out: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """softmax(x / T) [num_seqs, vocab] f32 from row_stats(x, temperature)'s max and sum, and its float32
    block sums [num_seqs, num_blocks]. No host sync."""
    x = _rows(x)
    num_seqs, vocab_size = x.shape
    num_blocks = triton.cdiv(vocab_size, BLOCK_SIZE)
    probs = out if out is not None else torch.empty(num_seqs, vocab_size, dtype=torch.float32, device=x.device)
    block_sums = torch.empty(num_seqs, num_blocks, dtype=torch.float32, device=x.device)
    temp = temperature.float().contiguous() if temperature is not None else row_max
    _softmax_kernel[(num_seqs,)](x, temp, row_max, sum_exp, probs, block_sums, vocab_size, x.stride(0),
                                 probs.stride(0), num_blocks, HAS_T=temperature is not None, BLOCKS=BLOCKS,
                                 BLOCK_SIZE=BLOCK_SIZE)
    return probs, block_sums
