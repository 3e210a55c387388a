"""Attention over the paged KV cache, for a flat batch mixing decode rows and prefill chunks.

Decode rows (one new token each) come first in the flat batch. Each row's context is padded to a length
that depends on that row alone (its length rounded up to DECODE_PAD_MULTIPLE), and rows of equal padded
length are attended together: keys and values gathered head-major from the cache, a -inf bias on the
padding, two batched matmuls and a float32 softmax. Padding every row to the batch's longest
context did not keep rows identical: the GEMMs summed a row's context in an order that depended on the
padded length (MKL float32 on any CPU tried; oneDNN bf16 on an AMX CPU), so a row changed with its company.
A row's padded length is now its own, and batched matmul computes each batch entry alike whatever the
number of entries (tests/engine/model/test_attention.py).
Each prefill chunk is attended on its own with SDPA and a causal mask, so a prompt's chunks compute the
same way whatever else is in the batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class PrefillSegment:
    token_start: int
    num_tokens: int
    # Tokens of this sequence already in the cache before the chunk.
    num_cached: int
    # [2, num_kv_heads, num_cached + num_tokens] key and value rows of the flattened cache layer, and the
    # causal mask [num_tokens, num_cached + num_tokens]; None when num_cached is 0 (the chunk attends to
    # itself).
    kv_index: Tensor | None = None
    mask: Tensor | None = None


# A multiple of every block size used (16 by default), so padded contexts cover whole blocks.
DECODE_PAD_MULTIPLE = 64


@dataclass(frozen=True)
class DecodeGroup:
    """Decode rows [row_start, row_start + num_rows) of the flat batch whose contexts pad to one length."""

    row_start: int
    num_rows: int
    # [2, num_rows, num_kv_heads, padded_len] key and value rows of a cache layer flattened to
    # [num_slots * 2 * num_kv_heads, head_dim] (row of slot s, k/v j, head h: (2 s + j) * num_kv_heads + h).
    kv_index: Tensor
    # [num_rows, 1, 1, padded_len] float32: 0 at real context positions, -inf at padding.
    bias: Tensor


def padded_context_len(context_len: int) -> int:
    return -(-context_len // DECODE_PAD_MULTIPLE) * DECODE_PAD_MULTIPLE


def decode_groups(contexts: list[tuple[list[int], int]], block_size: int, num_kv_heads: int,
                  device: torch.device) -> list[DecodeGroup]:
    """Groups for decode rows given as (block table, context length), in row order. Rows of one padded
    length must be adjacent (ModelRunner.order sorts them so)."""
    offsets = (torch.arange(2, device=device).view(2, 1, 1, 1) * num_kv_heads
               + torch.arange(num_kv_heads, device=device).view(1, 1, -1, 1))  # [2, 1, num_kv_heads, 1]
    groups: list[DecodeGroup] = []
    start = 0
    while start < len(contexts):
        length = padded_context_len(contexts[start][1])
        stop = start
        while stop < len(contexts) and padded_context_len(contexts[stop][1]) == length:
            stop += 1
        num_blocks = length // block_size
        tables = torch.tensor([(t + [0] * num_blocks)[:num_blocks] for t, _ in contexts[start:stop]], device=device)
        positions = torch.arange(length, device=device)
        is_real = positions[None] < torch.tensor([n for _, n in contexts[start:stop]], device=device)[:, None]
        slots = torch.where(is_real, tables[:, positions // block_size] * block_size + positions % block_size, 0)
        kv_index = (slots * 2 * num_kv_heads).view(1, stop - start, 1, length) + offsets
        bias = torch.zeros(stop - start, 1, 1, length, device=device)
        bias.masked_fill_(~is_real.view(stop - start, 1, 1, length), float("-inf"))
        groups.append(DecodeGroup(start, stop - start, kv_index, bias))
        start = stop
    return groups


@dataclass(frozen=True)
class AttentionMetadata:
    # [num_tokens] int64: cache slot written by each token of the flat batch.
    slot_mapping: Tensor
    num_decode_tokens: int = 0
    decode_groups: list[DecodeGroup] = field(default_factory=list)
    prefills: list[PrefillSegment] = field(default_factory=list)


def _gather(kv_layer: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
    """kv_layer [num_slots, 2, num_kv_heads, head_dim], index [2, ..., L] -> keys, values [..., L, head_dim]."""
    head_dim = kv_layer.shape[-1]
    rows = kv_layer.view(-1, head_dim).index_select(0, index.reshape(-1)).view(*index.shape, head_dim)
    return rows[0], rows[1]


def _decode_attention(q: Tensor, kv_layer: Tensor, group: DecodeGroup, scale: float) -> Tensor:
    num_rows, num_heads, head_dim = q.shape
    num_kv_heads = kv_layer.shape[2]
    keys, values = _gather(kv_layer, group.kv_index)  # [num_rows, num_kv_heads, L, head_dim] each
    grouped = q.view(num_rows, num_kv_heads, num_heads // num_kv_heads, head_dim)
    scores = torch.matmul(grouped, keys.transpose(-1, -2)).float()  # [num_rows, num_kv_heads, group, L]
    scores.mul_(scale).add_(group.bias)
    probs = torch.softmax(scores, dim=-1).to(q.dtype)
    return torch.matmul(probs, values).view(num_rows, num_heads, head_dim)


def _prefill_attention(q: Tensor, k: Tensor, v: Tensor, kv_layer: Tensor, seg: PrefillSegment,
                       scale: float) -> Tensor:
    """q [n, num_heads, head_dim]; k, v [n, num_kv_heads, head_dim] of this chunk."""
    query = q.transpose(0, 1).unsqueeze(0)  # [1, num_heads, n, head_dim]
    if seg.kv_index is None:
        keys, values = k.transpose(0, 1).unsqueeze(0), v.transpose(0, 1).unsqueeze(0)
        out = F.scaled_dot_product_attention(query, keys, values, is_causal=True, scale=scale, enable_gqa=True)
    else:
        keys, values = (t.unsqueeze(0) for t in _gather(kv_layer, seg.kv_index))  # [1, num_kv_heads, L, head_dim]
        out = F.scaled_dot_product_attention(query, keys, values, attn_mask=seg.mask, scale=scale, enable_gqa=True)
    return out[0].transpose(0, 1)


def paged_attention(q: Tensor, k: Tensor, v: Tensor, kv_layer: Tensor, md: AttentionMetadata,
                    scale: float) -> Tensor:
    """Write this batch's k, v into the cache layer, then attend. q [T, H, D], k/v [T, H_kv, D] -> [T, H, D]."""
    kv_layer.index_copy_(0, md.slot_mapping, torch.stack((k, v), dim=1))  # one write of [T, 2, H_kv, D]
    if len(md.decode_groups) == 1 and not md.prefills:
        return _decode_attention(q, kv_layer, md.decode_groups[0], scale)
    out = torch.empty_like(q)
    for group in md.decode_groups:
        rows = slice(group.row_start, group.row_start + group.num_rows)
        out[rows] = _decode_attention(q[rows], kv_layer, group, scale)
    for seg in md.prefills:
        rows = slice(seg.token_start, seg.token_start + seg.num_tokens)
        out[rows] = _prefill_attention(q[rows], k[rows], v[rows], kv_layer, seg, scale)
    return out
