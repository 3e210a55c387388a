"""Attention over the paged KV cache, for a flat batch mixing decode rows and prefill chunks.

Decode rows (one new token each) come first in the flat batch, sorted by context length. Rows of equal
context length are attended together: keys and values gathered head-major from the cache and one SDPA
call, with no padding and no mask. A row's result then depends on its own context alone: SDPA's fused CPU
kernel blocks by query and key length, never by batch entries (tests/engine/model/test_attention.py), and
a lone row computes exactly what transformers' SDPA attention computes for it.
Measured at batch 1 (benchmarks/profile_step.py, docs/performance.md): the earlier path, which padded each row to a
multiple of 64 and ran two bf16 batched matmuls and a float32 softmax, took 4-12x longer per layer (bf16
bmm on this AMX CPU cost ~40 us per tiny call), and padding alone changes the kernel's summation, so it
was not exact against transformers either.
Each prefill chunk is attended on its own with SDPA and a causal mask, so a prompt's chunks compute the
same way whatever else is in the batch. A chunk is computed in the geometry of the whole chunk it lies in
(the prefill_chunk_size positions from a multiple of it): its rows at their places among that chunk's
rows, the others zeros, and the keys of all that chunk's positions, those past the computed ones read
from a real slot and masked. SDPA's rows do not depend on each other's values (tests), so a token's keys
and values are the same whether its prompt ended early in the chunk or a cache hit started the chunk
late: the prefix cache can reuse any whole block that prefill computed. The first chunk (positions from 0)
is the exception: computed from position 0 it attends over its own rows only, as transformers computes a
short prompt, so it is whole-chunk geometry only when it is full (hearth.engine.scheduling.scheduler).
Only the whole query blocks a chunk's rows touch are computed: SDPA's CPU kernel splits a chunk's queries
into blocks (32 rows for a 128-row chunk here) and computes each block the same without the others
(calibrate_query_block measures the block at start-up). A chat's next turn, ~80 rows entering a chunk
late, attends over one to three 32-row blocks instead of the chunk's 128 rows.
With int8/int4 weights (not exact against transformers in any case), every row, decode or prefill, is
attended instead by hearth.kernels.model.row_attention (AttentionMetadata.row_contexts): each row on its own, read from
the cache through its block table, with no gather, no SDPA call per context length or per prompt, and no
geometry. A row's result depends on its position and keys alone, so a decode step computes a token's keys
and values bit for bit as a prefill does: a chat's previous answer is served from the prefix cache
(hearth.engine.scheduling.scheduler). On AMX-BF16 the kernel is at least as fast as SDPA here: a cold
1,000-token prompt took 2.3 ms a layer against 3.0 for one causal SDPA call without any chunking (2,000
tokens: 8.1 against 8.2), and 8 chats' next turns (8 x 85 rows over ~1,100 keys) 3.4 ms against ~8 for
SDPA in chunk geometry. Its vector path (no AMX) took ~4x SDPA's time on those prompts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from hearth.kernels.model.row_attention import apply_row_attention, apply_write_kv


def _slots(block_table: Tensor, positions: Tensor, block_size: int) -> Tensor:
    """block_table [..., num_blocks], positions [L] -> cache slots [..., L]."""
    return block_table[..., positions // block_size] * block_size + positions % block_size


def _kv_rows(slots: Tensor, num_kv_heads: int) -> Tensor:
    """slots [..., L] -> [2, ..., num_kv_heads, L]: rows of a cache layer flattened to
    [num_slots * 2 * num_kv_heads, head_dim] (row of slot s, key/value j, head h: (2 s + j) * num_kv_heads + h)."""
    heads = torch.arange(num_kv_heads, device=slots.device).view(-1, 1)  # [num_kv_heads, 1]
    keys = slots.unsqueeze(-2) * (2 * num_kv_heads) + heads  # [..., num_kv_heads, L]
    return torch.stack((keys, keys + num_kv_heads))


@dataclass(frozen=True)
class PrefillSegment:
    """Rows [token_start, token_start + num_tokens) of the flat batch: one prefill chunk."""

    token_start: int
    num_tokens: int
    # Place of the chunk's first row among the rows of its geometry (the whole chunk).
    row_offset: int = 0
    # [2, num_kv_heads, geometry keys] key and value rows of the flattened cache layer; None for a first
    # chunk computed from position 0 (it attends to its own keys and values).
    kv_index: Tensor | None = None
    # [query rows, geometry keys] causal mask of the geometry rows attention computes, from query_start;
    # None: SDPA's is_causal over all geometry rows (a first chunk).
    mask: Tensor | None = None
    # The first geometry row attention computes: the chunk's rows lie in whole query blocks from here
    # (calibrate_query_block), and SDPA computes a block the same without the blocks before or after it.
    query_start: int = 0
    # Rows of the whole chunk's geometry (a dense GEMM's padding); 0: derived (first chunks).
    geometry_rows: int = 0

    @property
    def num_geometry_rows(self) -> int:
        if self.geometry_rows:
            return self.geometry_rows
        # A first chunk: its keys are its rows.
        return self.num_tokens if self.kv_index is None else self.kv_index.shape[-1]


def calibrate_query_block(chunk_size: int, num_heads: int, num_kv_heads: int, head_dim: int, dtype: torch.dtype,
                          device: torch.device) -> int:
    """The fewest rows of a chunk's geometry (a divisor of chunk_size) that SDPA computes bit for bit as
    within the whole chunk, for every run of whole blocks: SDPA's CPU kernel splits queries into blocks by
    the query count (32 rows under 192 here) and computes each block on its own. chunk_size when none is.
    Measured on random data at two contexts (one chunk in, and past SDPA's 512-key split)."""
    generator = torch.Generator().manual_seed(0)
    for block in (16, 32, 64, 128, 256):
        if block >= chunk_size or chunk_size % block:
            continue
        is_exact = True
        for chunk_start in (chunk_size, -(-600 // chunk_size) * chunk_size):
            num_keys = chunk_start + chunk_size
            q = torch.randn(1, num_heads, chunk_size, head_dim, generator=generator).to(device=device, dtype=dtype)
            k, v = (torch.randn(1, num_kv_heads, num_keys, head_dim, generator=generator).to(device=device, dtype=dtype)
                    for _ in range(2))
            mask = torch.arange(num_keys, device=device).unsqueeze(0) <= torch.arange(
                chunk_start, num_keys, device=device).unsqueeze(1)
            whole = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
            for first in range(0, chunk_size, block):
                for stop in range(first + block, chunk_size + 1, block):
                    part = F.scaled_dot_product_attention(q[:, :, first:stop], k, v, attn_mask=mask[first:stop],
                                                          enable_gqa=True)
                    is_exact = is_exact and torch.equal(part, whole[:, :, first:stop])
        if is_exact:
            return block
    return chunk_size


def prefill_segment(token_start: int, start: int, count: int, block_table: list[int], block_size: int,
                    chunk_size: int, num_kv_heads: int, device: torch.device,
                    query_block: int | None = None) -> PrefillSegment:
    """The prefill chunk of positions [start, start + count), at rows from token_start of the flat batch, in
    the geometry of the whole chunk it lies in; attention computes the query_block-row blocks (a divisor
    of chunk_size, calibrate_query_block; the whole chunk by default) its rows touch. block_table covers
    positions [0, start + count)."""
    if start == 0:
        return PrefillSegment(token_start, count)
    chunk_start = start // chunk_size * chunk_size
    chunk_end = chunk_start + chunk_size
    context = torch.arange(chunk_end, device=device)
    # Positions past the chunk's last row read that row's slot (real values, masked).
    slots = _slots(torch.tensor(block_table, device=device), context.clamp(max=start + count - 1), block_size)
    kv_index = _kv_rows(slots, num_kv_heads)  # [2, num_kv_heads, chunk_end]
    row_offset = start - chunk_start
    if not chunk_start:  # a first chunk entered late (a cache hit): is_causal, as when computed from position 0
        return PrefillSegment(token_start, count, row_offset, kv_index)
    block = query_block or chunk_size
    query_start = row_offset // block * block
    query_stop = min(chunk_size, -(-(row_offset + count) // block) * block)
    query_pos = torch.arange(chunk_start + query_start, chunk_start + query_stop, device=device).unsqueeze(1)
    mask = context.unsqueeze(0) <= query_pos  # [query rows, chunk_end]
    return PrefillSegment(token_start, count, row_offset, kv_index, mask, query_start, chunk_size)


@dataclass(frozen=True)
class DecodeGroup:
    """Decode rows [row_start, row_start + num_rows) of the flat batch with one context length."""

    row_start: int
    num_rows: int
    # [2, num_rows, num_kv_heads, context_len] key and value rows of the flattened cache layer (_kv_rows).
    kv_index: Tensor


def decode_groups(contexts: list[tuple[list[int], int]], block_size: int, num_kv_heads: int,
                  device: torch.device) -> list[DecodeGroup]:
    """Groups for decode rows given as (block table, context length), in row order: one row each. torch's
    CPU SDPA is not batch-invariant (measured on AVX-512 without AMX: two equal rows in one call differ from
    each other and from either alone), so no two rows share a call, whatever their lengths."""
    groups: list[DecodeGroup] = []
    start = 0
    while start < len(contexts):
        length = contexts[start][1]
        stop = start + 1
        num_blocks = -(-length // block_size)
        tables = torch.tensor([t[:num_blocks] for t, _ in contexts[start:stop]], device=device)
        slots = _slots(tables, torch.arange(length, device=device), block_size)  # [num_rows, length]
        kv_index = _kv_rows(slots, num_kv_heads)
        groups.append(DecodeGroup(start, stop - start, kv_index))
        start = stop
    return groups


@dataclass(frozen=True)
class RowContexts:
    """Rows' contexts for hearth.kernels.model.row_attention: their block tables concatenated, and each row's table start
    and position (it attends to positions 0..position). They are the flat batch's first rows."""

    tables: Tensor  # int32 [sum of table lengths]
    table_starts: Tensor  # int64 [num_rows]
    positions: Tensor  # int64 [num_rows]
    block_size: int

    @property
    def num_rows(self) -> int:
        return self.positions.shape[0]


@dataclass(frozen=True)
class AttentionMetadata:
    # [num_tokens] int64: cache slot written by each token of the flat batch.
    slot_mapping: Tensor
    num_decode_tokens: int = 0
    decode_groups: list[DecodeGroup] = field(default_factory=list)
    prefills: list[PrefillSegment] = field(default_factory=list)
    # Every decode group's kv_index flattened and concatenated, so that one gather per layer serves them
    # all (None for fewer than two groups).
    decode_index: Tensor | None = None
    # The contexts of the rows hearth.kernels.model.row_attention attends: every row of the batch, decode rows first (then
    # decode_groups and prefills are empty).
    row_contexts: RowContexts | None = None


def concat_decode_index(groups: list[DecodeGroup]) -> Tensor | None:
    return torch.cat([g.kv_index.reshape(-1) for g in groups]) if len(groups) > 1 else None


def _gather(kv_layer: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
    """kv_layer [num_slots, 2, num_kv_heads, head_dim], index [2, ..., L] -> keys, values [..., L, head_dim]."""
    head_dim = kv_layer.shape[-1]
    rows = kv_layer.view(-1, head_dim).index_select(0, index.reshape(-1)).view(*index.shape, head_dim)
    return rows[0], rows[1]


def _decode_attention(q: Tensor, keys: Tensor, values: Tensor, scale: float) -> Tensor:
    """q [rows, num_heads, head_dim]; keys, values [rows, num_kv_heads, L, head_dim]."""
    num_rows, num_heads, head_dim = q.shape
    out = F.scaled_dot_product_attention(q.unsqueeze(2), keys, values, scale=scale,
                                         enable_gqa=True)  # [num_rows, num_heads, 1, head_dim]
    return out.view(num_rows, num_heads, head_dim)


def _decode_groups_attention(q: Tensor, kv_layer: Tensor, md: AttentionMetadata, scale: float) -> list[Tensor]:
    """Each decode group's output [rows, num_heads, head_dim], in row order."""
    if md.decode_index is None:
        return [_decode_attention(q[g.row_start:g.row_start + g.num_rows], *_gather(kv_layer, g.kv_index), scale)
                for g in md.decode_groups]
    head_dim = kv_layer.shape[-1]
    gathered = kv_layer.view(-1, head_dim).index_select(0, md.decode_index)  # [sum of index sizes, head_dim]
    outs, start = [], 0
    for g in md.decode_groups:
        size = g.kv_index.numel()
        kv = gathered[start:start + size].view(*g.kv_index.shape, head_dim)
        outs.append(_decode_attention(q[g.row_start:g.row_start + g.num_rows], kv[0], kv[1], scale))
        start += size
    return outs


def _prefill_attention(q: Tensor, k: Tensor, v: Tensor, kv_layer: Tensor, seg: PrefillSegment,
                       scale: float) -> Tensor:
    """q [n, num_heads, head_dim]; k, v [n, num_kv_heads, head_dim] of this chunk."""
    if seg.kv_index is None:
        query = q.transpose(0, 1).unsqueeze(0)  # [1, num_heads, n, head_dim]
        keys, values = k.transpose(0, 1).unsqueeze(0), v.transpose(0, 1).unsqueeze(0)
        out = F.scaled_dot_product_attention(query, keys, values, is_causal=True, scale=scale, enable_gqa=True)
        return out[0].transpose(0, 1)
    num_query_rows = seg.num_geometry_rows if seg.mask is None else seg.mask.shape[0]
    rows = slice(seg.row_offset - seg.query_start, seg.row_offset - seg.query_start + seg.num_tokens)
    if num_query_rows != seg.num_tokens:
        padded = q.new_zeros(num_query_rows, *q.shape[1:])
        padded[rows] = q
        q = padded
    query = q.transpose(0, 1).unsqueeze(0)  # [1, num_heads, query rows, head_dim]
    keys, values = (t.unsqueeze(0) for t in _gather(kv_layer, seg.kv_index))  # [1, num_kv_heads, L, head_dim]
    out = F.scaled_dot_product_attention(query, keys, values, attn_mask=seg.mask, is_causal=seg.mask is None,
                                         scale=scale, enable_gqa=True)
    return out[0].transpose(0, 1)[rows]


def paged_attention(q: Tensor, k: Tensor, v: Tensor, kv_layer: Tensor, md: AttentionMetadata,
                    scale: float) -> Tensor:
    """Write this batch's k, v into the cache layer, then attend. q [T, H, D], k/v [T, H_kv, D] -> [T, H, D]."""
    if md.row_contexts is not None:  # the row kernel's cache, in its layout
        apply_write_kv(kv_layer, k, v, md.slot_mapping, md.row_contexts.block_size)
    else:
        kv_layer.index_copy_(0, md.slot_mapping, torch.stack((k, v), dim=1))  # one write of [T, 2, H_kv, D]
    # Decode rows come first and prefill chunks follow in token order, so the parts concatenate in order (with
    # row_contexts, one part).
    if md.row_contexts is not None:
        rows = md.row_contexts
        parts = [apply_row_attention(q[:rows.num_rows], kv_layer, rows.tables, rows.table_starts, rows.positions,
                                     rows.block_size, scale)]
    else:
        parts = _decode_groups_attention(q, kv_layer, md, scale)
    for seg in md.prefills:
        rows = slice(seg.token_start, seg.token_start + seg.num_tokens)
        parts.append(_prefill_attention(q[rows], k[rows], v[rows], kv_layer, seg, scale))
    return parts[0] if len(parts) == 1 else torch.cat(parts)
