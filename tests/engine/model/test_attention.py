"""Decode attention: each row's output is the same alone or amid rows of any other lengths. Prefill
attention: a chunk's rows are the same wherever its prompt was cut."""

from __future__ import annotations

import pytest
import torch

from hearth.engine.model.attention import (
    AttentionMetadata,
    calibrate_query_block,
    concat_decode_index,
    decode_groups,
    paged_attention,
    prefill_segment,
)

NUM_KV_HEADS, HEAD_DIM, NUM_HEADS, BLOCK = 3, 64, 9, 16


def _attend(q, k, v, kv_layer, contexts):
    """Rows sorted by context length, as ModelRunner orders them; returns outputs in the given order."""
    order = sorted(range(len(contexts)), key=lambda i: contexts[i][1])
    tables = [contexts[i] for i in order]
    write = [t[(n - 1) // BLOCK] * BLOCK + (n - 1) % BLOCK for t, n in tables]
    groups = decode_groups(tables, BLOCK, NUM_KV_HEADS, torch.device("cpu"))
    md = AttentionMetadata(slot_mapping=torch.tensor(write), num_decode_tokens=len(order), decode_groups=groups,
                           decode_index=concat_decode_index(groups))
    out = paged_attention(q[order], k[order], v[order], kv_layer.clone(), md, 0.125)
    return out[torch.tensor(order).argsort()]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_decode_rows_equal_alone_and_batched(dtype):
    generator = torch.Generator().manual_seed(0)
    kv_layer = torch.randn(128 * BLOCK, 2, NUM_KV_HEADS, HEAD_DIM, generator=generator).to(dtype)
    lengths = [1, 7, 36, 39, 40, 48, 64, 65, 100, 129, 250, 17, 3, 300, 100, 7]  # equal lengths share a call
    free = torch.randperm(128, generator=generator).tolist()
    contexts = [([free.pop() for _ in range(-(-n // BLOCK))], n) for n in lengths]
    qkv = torch.randn(len(lengths), NUM_HEADS + 2 * NUM_KV_HEADS, HEAD_DIM, generator=generator).to(dtype)
    q, k, v = qkv.split([NUM_HEADS, NUM_KV_HEADS, NUM_KV_HEADS], dim=1)  # strided views, as in the model
    batched = _attend(q, k, v, kv_layer, contexts)
    for i in range(len(lengths)):
        alone = _attend(q[i:i + 1], k[i:i + 1], v[i:i + 1], kv_layer, contexts[i:i + 1])
        assert torch.equal(alone[0], batched[i]), lengths[i]
        for j in (2, 9, 13):  # and beside one other row of a similar or a much longer context
            pair = _attend(q[[i, j]], k[[i, j]], v[[i, j]], kv_layer, [contexts[i], contexts[j]])
            assert torch.equal(pair[0], batched[i]), (lengths[i], lengths[j])


CHUNK = 64


def _prefill(q, k, v, kv_layer, table, start, count, query_block=None):
    """Positions [start, start + count) as one prefill chunk; returns their outputs and the cache after."""
    slots = torch.tensor([table[p // BLOCK] * BLOCK + p % BLOCK for p in range(start, start + count)])
    seg = prefill_segment(0, start, count, table, BLOCK, CHUNK, NUM_KV_HEADS, torch.device("cpu"), query_block)
    md = AttentionMetadata(slot_mapping=slots, prefills=[seg])
    rows = slice(start, start + count)
    return paged_attention(q[rows], k[rows], v[rows], kv_layer, md, 0.125)


@pytest.mark.parametrize("is_blockwise", [False, True])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_prefill_rows_are_the_same_wherever_the_prompt_was_cut(dtype, is_blockwise):
    """A prompt computed in whole chunks, then the same positions cut every other way a prompt's end or a
    cache hit cuts them: a short last chunk, a chunk entered late (the first one too), one row. Blockwise:
    the cuts attend over only the calibrated query blocks their rows touch, as the runner does."""
    query_block = (calibrate_query_block(CHUNK, NUM_HEADS, NUM_KV_HEADS, HEAD_DIM, dtype, torch.device("cpu"))
                   if is_blockwise else None)
    assert query_block is None or CHUNK % query_block == 0
    generator = torch.Generator().manual_seed(4)
    num_positions = 3 * CHUNK
    table = torch.randperm(32, generator=generator)[:num_positions // BLOCK].tolist()
    qkv = torch.randn(num_positions, NUM_HEADS + 2 * NUM_KV_HEADS, HEAD_DIM, generator=generator).to(dtype)
    q, k, v = qkv.split([NUM_HEADS, NUM_KV_HEADS, NUM_KV_HEADS], dim=1)
    empty = torch.randn(32 * BLOCK, 2, NUM_KV_HEADS, HEAD_DIM, generator=generator).to(dtype)
    whole_cache = empty.clone()
    whole = torch.cat([_prefill(q, k, v, whole_cache, table, s, CHUNK) for s in range(0, num_positions, CHUNK)])
    # (start, count) cuts after the whole chunks before `start` were computed the whole-chunk way.
    for start, count in [(CHUNK, 20), (CHUNK + 16, 48), (16, 48), (2 * CHUNK + 37, 1), (2 * CHUNK, 1), (48, 16),
                         (2 * CHUNK + 5, 50), (CHUNK + 40, 24)]:
        cache = empty.clone()
        for s in range(0, start // CHUNK * CHUNK, CHUNK):
            _prefill(q, k, v, cache, table, s, CHUNK)
        if start % CHUNK:  # a hit: the chunk's rows before `start` are in the cache, as a full chunk left them
            first = start // CHUNK * CHUNK
            cache[[table[p // BLOCK] * BLOCK + p % BLOCK for p in range(first, start)]] = \
                whole_cache[[table[p // BLOCK] * BLOCK + p % BLOCK for p in range(first, start)]]
        part = _prefill(q, k, v, cache, table, start, count, query_block)
        assert torch.equal(part, whole[start:start + count]), (start, count)
