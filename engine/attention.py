"""Attention over the paged KV cache, for a flat batch mixing decode rows and prefill chunks.

Decode rows (one new token each) come first in the flat batch and are attended together: their context
keys and values are gathered head-major from the cache, padded to the longest context with a -inf bias,
and reduced with two batched matmuls and a float32 softmax. That form gave bit-identical rows whatever
the batch and the padding (torch's SDPA kernel did not: its reductions depend on the padded length).
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
    # [num_kv_heads, num_cached + num_tokens] rows of the flattened cache, and the causal mask
    # [num_tokens, num_cached + num_tokens]; None when num_cached is 0 (the chunk attends to itself).
    kv_index: Tensor | None = None
    mask: Tensor | None = None


@dataclass(frozen=True)
class AttentionMetadata:
    # [num_tokens] int64: cache slot written by each token of the flat batch.
    slot_mapping: Tensor
    num_decode_tokens: int = 0
    # [num_decodes, num_kv_heads, max_context] rows of the cache flattened to [num_slots * num_kv_heads, head_dim].
    decode_kv_index: Tensor | None = None
    # [num_decodes, 1, 1, max_context] float32: 0 at real context positions, -inf at padding.
    decode_bias: Tensor | None = None
    prefills: list[PrefillSegment] = field(default_factory=list)


def _gather(cache: Tensor, index: Tensor) -> Tensor:
    """cache [num_slots, num_kv_heads, head_dim], index [..., L] of flattened rows -> [..., L, head_dim]."""
    head_dim = cache.shape[-1]
    return cache.view(-1, head_dim).index_select(0, index.reshape(-1)).view(*index.shape, head_dim)


def _decode_attention(q: Tensor, k_cache: Tensor, v_cache: Tensor, md: AttentionMetadata, scale: float) -> Tensor:
    num_rows, num_heads, head_dim = q.shape
    num_kv_heads = k_cache.shape[1]
    keys = _gather(k_cache, md.decode_kv_index)  # [num_rows, num_kv_heads, L, head_dim]
    values = _gather(v_cache, md.decode_kv_index)
    grouped = q.view(num_rows, num_kv_heads, num_heads // num_kv_heads, head_dim)
    scores = torch.matmul(grouped, keys.transpose(-1, -2)).float()  # [num_rows, num_kv_heads, group, L]
    scores.mul_(scale).add_(md.decode_bias)
    probs = torch.softmax(scores, dim=-1).to(q.dtype)
    return torch.matmul(probs, values).view(num_rows, num_heads, head_dim)


def _prefill_attention(q: Tensor, k: Tensor, v: Tensor, k_cache: Tensor, v_cache: Tensor, seg: PrefillSegment,
                       scale: float) -> Tensor:
    """q [n, num_heads, head_dim]; k, v [n, num_kv_heads, head_dim] of this chunk."""
    query = q.transpose(0, 1).unsqueeze(0)  # [1, num_heads, n, head_dim]
    if seg.kv_index is None:
        keys, values = k.transpose(0, 1).unsqueeze(0), v.transpose(0, 1).unsqueeze(0)
        out = F.scaled_dot_product_attention(query, keys, values, is_causal=True, scale=scale, enable_gqa=True)
    else:
        keys = _gather(k_cache, seg.kv_index).unsqueeze(0)  # [1, num_kv_heads, L, head_dim]
        values = _gather(v_cache, seg.kv_index).unsqueeze(0)
        out = F.scaled_dot_product_attention(query, keys, values, attn_mask=seg.mask, scale=scale, enable_gqa=True)
    return out[0].transpose(0, 1)


def paged_attention(q: Tensor, k: Tensor, v: Tensor, k_cache: Tensor, v_cache: Tensor, md: AttentionMetadata,
                    scale: float) -> Tensor:
    """Write this batch's k, v into the cache, then attend. q [T, H, D], k/v [T, H_kv, D] -> [T, H, D]."""
    k_cache.index_copy_(0, md.slot_mapping, k)
    v_cache.index_copy_(0, md.slot_mapping, v)
    out = torch.empty_like(q)
    num_decode = md.num_decode_tokens
    if num_decode:
        out[:num_decode] = _decode_attention(q[:num_decode], k_cache, v_cache, md, scale)
    for seg in md.prefills:
        rows = slice(seg.token_start, seg.token_start + seg.num_tokens)
        out[rows] = _prefill_attention(q[rows], k[rows], v[rows], k_cache, v_cache, seg, scale)
    return out
