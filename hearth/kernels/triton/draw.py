"""The seeded draw: hearth.kernels.logits.sampling's inverse CDF at splitmix64's uniform, computed inside the kernels.

The uniform of a row is output `position` of a splitmix64 generator seeded with its stream key, bit for bit
hearth.kernels.logits.sampling.stream_uniforms: the same request draws the same uniform on the CPU and on the GPU, so
the same probabilities give the same token. Cumulative masses are float64 over float32 values, as there.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from hearth.kernels.logits.blockwise import BLOCK_SIZE

BLOCKS = 128
CANDIDATE_BLOCK = 256


@triton.jit
def _uniform(key, position):
    """int64 stream key, int64 position -> float64 in [0, 1) (hearth.kernels.logits.sampling.stream_uniforms)."""
    state = key.to(tl.uint64, bitcast=True) + (position + 1).to(tl.uint64, bitcast=True) * 0x9E3779B97F4A7C15
    z = (state ^ (state >> 30)) * 0xBF58476D1CE4E5B9
    z = (z ^ (z >> 27)) * 0x94D049BB133111EB
    z = z ^ (z >> 31)
    return (z >> 11).to(tl.float64) * (2.0 ** -53)


@triton.jit
def _below(x):
    """The largest float64 below a non-negative x (x itself at 0): torch.nextafter(x, 0)."""
    return tl.where(x > 0, (x.to(tl.int64, bitcast=True) - 1).to(tl.float64, bitcast=True), x)


@triton.jit
def _pick(values, index):
    """values[index] of a 1-D tile, for a scalar index inside it."""
    return tl.sum(tl.where(tl.arange(0, values.shape[0]) == index, values, 0))


@triton.jit
def _uniforms_kernel(keys_ptr, pos_ptr, out_ptr, n, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    keys = tl.load(keys_ptr + i, mask=i < n, other=0)
    tl.store(out_ptr + i, _uniform(keys, tl.load(pos_ptr + i, mask=i < n, other=0)), mask=i < n)


@triton.jit
def _draw_probs_kernel(probs_ptr, bsum_ptr, keys_ptr, pos_ptr, out_ptr, vocab_size, p_stride, num_blocks,
                       BLOCKS: tl.constexpr, BLOCK_SIZE: tl.constexpr):
    # grid (num_seqs,): probs [num_seqs, vocab] f32, bsum [num_seqs, num_blocks] f32 -> out [num_seqs] int64
    row = tl.program_id(0).to(tl.int64)
    u = _uniform(tl.load(keys_ptr + row), tl.load(pos_ptr + row))
    b = tl.arange(0, BLOCKS)
    # Pass 1 over the block sums: the total (last float64 cumulative mass).
    total = tl.zeros([], tl.float64)
    for c0 in range(0, num_blocks, BLOCKS):
        bs = tl.load(bsum_ptr + row * num_blocks + c0 + b, mask=c0 + b < num_blocks, other=0.0).to(tl.float64)
        total = _pick(tl.cumsum(bs, 0) + total, BLOCKS - 1)
    target = tl.minimum(u * total, _below(total))
    # Pass 2: the first block whose cumulative mass passes the target, and the mass before it.
    before = tl.zeros([], tl.float64)
    block = tl.zeros([], tl.int32) + num_blocks - 1  # a tensor from the start: num_blocks == 1 is a constexpr
    mass_before = total - tl.load(bsum_ptr + row * num_blocks + num_blocks - 1).to(tl.float64)
    is_found = tl.zeros([], tl.int1)
    for c0 in range(0, num_blocks, BLOCKS):
        bs = tl.load(bsum_ptr + row * num_blocks + c0 + b, mask=c0 + b < num_blocks, other=0.0).to(tl.float64)
        cum = tl.cumsum(bs, 0) + before  # [BLOCKS]
        first = tl.min(tl.where((cum > target) & (c0 + b < num_blocks), b, BLOCKS))
        is_hit = (first < BLOCKS) & ~is_found
        block = tl.where(is_hit, c0 + first, block)
        mass_before = tl.where(is_hit, tl.where(first > 0, _pick(cum, first - 1), before), mass_before)
        is_found = is_found | is_hit
        before = _pick(cum, BLOCKS - 1)
    # Inside the block: float64 cumsum of its probabilities after the mass before it.
    o = tl.arange(0, BLOCK_SIZE)
    cols = block * BLOCK_SIZE + o
    values = tl.load(probs_ptr + row * p_stride + cols, mask=cols < vocab_size, other=0.0).to(tl.float64)
    local = tl.cumsum(values, 0) + mass_before
    pos = tl.sum((local <= target).to(tl.int32))
    # Past the end (float32 block sum and float64 cumsum rounding apart): the block's last positive token.
    last_positive = tl.max(tl.where(values > 0, o, -1))
    pos = tl.where(pos >= BLOCK_SIZE, tl.where(last_positive < 0, BLOCK_SIZE - 1, last_positive), pos)
    tl.store(out_ptr + row, tl.minimum(block * BLOCK_SIZE + pos, vocab_size - 1).to(tl.int64))


@triton.jit
def _draw_candidates_kernel(w_ptr, ids_ptr, keep_ptr, keys_ptr, pos_ptr, out_ptr, num_candidates,
                            BLOCK: tl.constexpr):
    # grid (num_seqs,): weights [num_seqs, K] f32 sorted descending, ids [num_seqs, K], keep_len [num_seqs]
    row = tl.program_id(0).to(tl.int64)
    u = _uniform(tl.load(keys_ptr + row), tl.load(pos_ptr + row))
    last = tl.load(keep_ptr + row) - 1
    k = tl.arange(0, BLOCK)
    before = tl.zeros([], tl.float64)
    kept = tl.zeros([], tl.float64)
    for c0 in range(0, num_candidates, BLOCK):
        w = tl.load(w_ptr + row * num_candidates + c0 + k, mask=c0 + k < num_candidates, other=0.0)
        cum = tl.cumsum(w.to(tl.float64), 0) + before
        kept = tl.where((last >= c0) & (last < c0 + BLOCK), _pick(cum, last - c0), kept)
        before = _pick(cum, BLOCK - 1)
    target = tl.minimum(u * kept, _below(kept))
    before = tl.zeros([], tl.float64)
    count = tl.zeros([], tl.int64)
    for c0 in range(0, num_candidates, BLOCK):
        inside = c0 + k < num_candidates
        w = tl.load(w_ptr + row * num_candidates + c0 + k, mask=inside, other=0.0)
        cum = tl.cumsum(w.to(tl.float64), 0) + before
        count += tl.sum(((cum <= target) & inside).to(tl.int64))
        before = _pick(cum, BLOCK - 1)
    pos = tl.minimum(count, last)
    tl.store(out_ptr + row, tl.load(ids_ptr + row * num_candidates + pos).to(tl.int64))


def stream_uniforms(stream_keys: Tensor, positions: Tensor) -> Tensor:
    """[num_seqs] float64: hearth.kernels.logits.sampling.stream_uniforms, computed by the kernels' own helper."""
    n = stream_keys.shape[0]
    out = torch.empty(n, dtype=torch.float64, device=stream_keys.device)
    _uniforms_kernel[(triton.cdiv(max(n, 1), 128),)](stream_keys.contiguous(), positions.contiguous(), out, n,
                                                    BLOCK=128)
    return out


def draw_from_probs(probs: Tensor, block_sums: Tensor, stream_keys: Tensor, positions: Tensor) -> Tensor:
    """Inverse CDF over the whole vocabulary at each row's uniform: [num_seqs] int64 token ids.

    probs [num_seqs, vocab] f32; block_sums [num_seqs, ceil(vocab / 64)] f32 their block sums. No host sync."""
    probs = probs if probs.stride(1) == 1 else probs.contiguous()
    num_seqs, vocab_size = probs.shape
    out = torch.empty(num_seqs, dtype=torch.int64, device=probs.device)
    _draw_probs_kernel[(num_seqs,)](probs, block_sums.contiguous(), stream_keys.contiguous(), positions.contiguous(),
                                    out, vocab_size, probs.stride(0), block_sums.shape[1], BLOCKS=BLOCKS,
                                    BLOCK_SIZE=BLOCK_SIZE)
    return out


def draw_from_candidates(weights: Tensor, token_ids: Tensor, keep_len: Tensor, stream_keys: Tensor,
                         positions: Tensor) -> Tensor:
    """Inverse CDF over the first keep_len candidates (weights [num_seqs, K] sorted descending, their ids):
    [num_seqs] int64 token ids (hearth.kernels.logits.sampling.draw_from_candidates). No host sync."""
    num_seqs, num_candidates = weights.shape
    out = torch.empty(num_seqs, dtype=torch.int64, device=weights.device)
    block = min(CANDIDATE_BLOCK, triton.next_power_of_2(num_candidates))
    _draw_candidates_kernel[(num_seqs,)](weights.contiguous(), token_ids.contiguous(), keep_len.contiguous(),
                                         stream_keys.contiguous(), positions.contiguous(), out, num_candidates,
                                         BLOCK=block)
    return out
