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
    # [2, num_kv_heads, num_cached + num_tokens] key and value rows of the flattened cache layer, and the
    # causal mask [num_tokens, num_cached + num_tokens]; None when num_cached is 0 (the chunk attends to
    # itself).
    kv_index: Tensor | None = None
    mask: Tensor | None = None


@dataclass(frozen=True)
class AttentionMetadata:
    # [num_tokens] int64: cache slot written by each token of the flat batch.
    slot_mapping: Tensor
    num_decode_tokens: int = 0
    # [2, num_decodes, num_kv_heads, max_context] key and value rows of a cache layer flattened to
    # [num_slots * 2 * num_kv_heads, head_dim] (row of slot s, k/v j, head h: (2 s + j) * num_kv_heads + h).
    decode_kv_index: Tensor | None = None
    # [num_decodes, 1, 1, max_context] float32: 0 at real context positions, -inf at padding.
    decode_bias: Tensor | None = None
    prefills: list[PrefillSegment] = field(default_factory=list)


def _gather(kv_layer: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
    """kv_layer [num_slots, 2, num_kv_heads, head_dim], index [2, ..., L] -> keys, values [..., L, head_dim]."""
    head_dim = kv_layer.shape[-1]
    rows = kv_layer.view(-1, head_dim).index_select(0, index.reshape(-1)).view(*index.shape, head_dim)
    return rows[0], rows[1]


def _decode_attention(q: Tensor, kv_layer: Tensor, md: AttentionMetadata, scale: float) -> Tensor:
    num_rows, num_heads, head_dim = q.shape
    num_kv_heads = kv_layer.shape[2]
    keys, values = _gather(kv_layer, md.decode_kv_index)  # [num_rows, num_kv_heads, L, head_dim] each
    grouped = q.view(num_rows, num_kv_heads, num_heads // num_kv_heads, head_dim)
    scores = torch.matmul(grouped, keys.transpose(-1, -2)).float()  # [num_rows, num_kv_heads, group, L]
    scores.mul_(scale).add_(md.decode_bias)
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
    kv_layer[:, 0].index_copy_(0, md.slot_mapping, k)
    kv_layer[:, 1].index_copy_(0, md.slot_mapping, v)
    num_decode = md.num_decode_tokens
    if num_decode and not md.prefills:
        return _decode_attention(q, kv_layer, md, scale)
    out = torch.empty_like(q)
    if num_decode:
        out[:num_decode] = _decode_attention(q[:num_decode], kv_layer, md, scale)
    for seg in md.prefills:
        rows = slice(seg.token_start, seg.token_start + seg.num_tokens)
        out[rows] = _prefill_attention(q[rows], k[rows], v[rows], kv_layer, seg, scale)
    return out
