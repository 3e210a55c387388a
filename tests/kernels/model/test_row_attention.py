"""hearth.kernels.model.row_attention against a float64 reference over gathered keys, and each row's result whatever else
is in the call (skipped, with the reason, where it cannot run), on the vector path and, where the CPU has
AMX-BF16, on the tile path (rows of one sequence share a tile there)."""

from __future__ import annotations

import pytest
import torch

from hearth.kernels.model import row_attention

NUM_HEADS, NUM_KV_HEADS, HEAD_DIM, BLOCK = 9, 3, 64, 16
REASON = row_attention.unavailable_reason(NUM_HEADS, NUM_KV_HEADS, HEAD_DIM, torch.bfloat16, torch.device("cpu"))
pytestmark = [
    pytest.mark.usefixtures("c_kernel_level"),  # each test at every CPU level the C kernels are built for
    pytest.mark.skipif(REASON is not None, reason=f"hearth.kernels.model.row_attention: {REASON}"),
]
PATHS = ["vector", pytest.param("amx", marks=pytest.mark.skipif(
    REASON is not None or not row_attention._has_amx(), reason="this CPU lacks AMX-BF16"))]


@pytest.fixture(params=PATHS)
def path(request, c_kernel_level):
    is_on = row_attention.use_amx(request.param == "amx")
    if request.param == "amx" and not is_on:
        pytest.skip("the CPU level is below amx")
    assert is_on == (request.param == "amx")
    yield request.param
    row_attention.use_amx(True)


def _case(lengths: list[int], seed: int = 0, shape=(NUM_HEADS, NUM_KV_HEADS, HEAD_DIM, BLOCK)):
    num_heads, num_kv_heads, head_dim, block = shape
    generator = torch.Generator().manual_seed(seed)
    num_blocks = sum(-(-n // block) for n in lengths) + 4
    kv_layer = (torch.randn(num_blocks * block, 2, num_kv_heads, head_dim, generator=generator) * 2).to(torch.bfloat16)
    free = torch.randperm(num_blocks, generator=generator).tolist()
    tables = [[free.pop() for _ in range(-(-n // block))] for n in lengths]
    q = torch.randn(len(lengths), num_heads, head_dim, generator=generator).to(torch.bfloat16)
    return q, kv_layer, tables


def _apply(q, kv_layer, tables, positions, block=BLOCK):
    """Each row through its own copy of its table; a single table given as a list of ints is every row's, one
    copy (a prefill chunk's rows)."""
    flat, starts = [], []
    if tables and isinstance(tables[0], int):
        flat, starts = list(tables), [0] * len(positions)
    for table in tables if not flat else []:
        starts.append(len(flat))
        flat += table
    return row_attention.apply_row_attention(q, _written(kv_layer, block), torch.tensor(flat, dtype=torch.int32),
                                             torch.tensor(starts), torch.tensor(positions), block, q.shape[-1] ** -0.5)


def _written(kv_layer, block):
    """kv_layer [slots, 2, kv heads, dim] as the kernel keeps it: every slot written through apply_write_kv (the
    AMX path's tiled layout, or the same tensor)."""
    cache = torch.zeros_like(kv_layer)
    row_attention.apply_write_kv(cache, kv_layer[:, 0], kv_layer[:, 1], torch.arange(kv_layer.shape[0]), block)
    return cache


def _reference(q, kv_layer, table, position, block=BLOCK):
    slots = torch.tensor([table[p // block] * block + p % block for p in range(position + 1)])
    keys, values = kv_layer[slots, 0].double(), kv_layer[slots, 1].double()  # [L, kv heads, dim]
    group = q.shape[0] // kv_layer.shape[2]
    keys, values = keys.repeat_interleave(group, dim=1), values.repeat_interleave(group, dim=1)
    scores = torch.einsum("hd,lhd->hl", q.double(), keys) * q.shape[-1] ** -0.5
    return torch.einsum("hl,lhd->hd", scores.softmax(-1), values)


def test_each_row_matches_softmax_attention_over_its_own_context(path):
    lengths = [1, 2, 15, 16, 17, 33, 100, 129, 700]
    q, kv_layer, tables = _case(lengths)
    out = _apply(q, kv_layer, tables, [n - 1 for n in lengths])
    assert out.dtype == torch.bfloat16 and out.shape == q.shape
    for i, n in enumerate(lengths):
        reference = _reference(q[i], kv_layer, tables[i], n - 1)
        # float32 inside, bf16 out: within bf16's rounding of the exact result.
        torch.testing.assert_close(out[i].double(), reference, rtol=2 ** -7, atol=2 ** -8), n
    # One key: the output is its value.
    assert torch.equal(out[0], kv_layer[tables[0][0] * BLOCK, 1].repeat_interleave(3, dim=0))


def test_a_rows_result_does_not_depend_on_the_other_rows_or_the_thread_count(path):
    lengths = [300, 40, 129, 300, 7, 512]
    q, kv_layer, tables = _case(lengths, seed=1)
    positions = [n - 1 for n in lengths]
    together = _apply(q, kv_layer, tables, positions)
    for i in range(len(lengths)):
        assert torch.equal(_apply(q[i:i + 1], kv_layer, [tables[i]], [positions[i]]), together[i:i + 1])
    # The rows of one sequence's prefill chunk (positions 280..299) give what each gives alone.
    chunk = _apply(q[:1].expand(20, -1, -1), kv_layer, [tables[0]] * 20, list(range(280, 300)))
    for offset in (0, 7, 19):
        assert torch.equal(_apply(q[:1], kv_layer, [tables[0]], [280 + offset])[0], chunk[offset])
    # Sharing one table, rows of a chunk share tiles on the AMX path (5 rows of 3 heads each), and a task walks
    # up to 8 tiles' keys at once: 47 rows at positions 253..299 are tiles of 5 (x 9) and 2, tasks of 8 and 2
    # tiles. Alone or in another cut each row gives the same bits.
    shared = _apply(q[:1].expand(47, -1, -1), kv_layer, tables[0], list(range(253, 300)))
    for start, stop in ((0, 1), (3, 10), (16, 17), (1, 47), (40, 47)):
        cut = _apply(q[:1].expand(stop - start, -1, -1), kv_layer, tables[0], list(range(253 + start, 253 + stop)))
        assert torch.equal(cut, shared[start:stop]), (start, stop)
    assert torch.equal(shared[27:], chunk)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert torch.equal(_apply(q, kv_layer, tables, positions), together)
    finally:
        torch.set_num_threads(threads)


def test_shapes_it_cannot_take_are_named():
    cpu = torch.device("cpu")
    assert "head_dim" in row_attention.unavailable_reason(4, 2, 48, torch.bfloat16, cpu)
    assert "group" in row_attention.unavailable_reason(32, 1, 64, torch.bfloat16, cpu)
    assert "bfloat16" in row_attention.unavailable_reason(4, 2, 64, torch.float32, cpu)


def test_the_amx_path_is_within_bf16_rounding_of_the_vector_path():
    if REASON is not None or not row_attention._has_amx():
        pytest.skip("this CPU lacks AMX-BF16")
    lengths = [1, 64, 65, 200, 1000]
    q, kv_layer, tables = _case(lengths, seed=2)
    positions = [n - 1 for n in lengths]
    try:
        row_attention.use_amx(False)
        vector = _apply(q, kv_layer, tables, positions)
        row_attention.use_amx(True)
        tiles = _apply(q, kv_layer, tables, positions)
    finally:
        row_attention.use_amx(True)
    # The tile path rounds the softmax weights to bf16 before weighting the values.
    torch.testing.assert_close(tiles.float(), vector.float(), rtol=2 ** -6, atol=2 ** -7)


@pytest.mark.parametrize("shape", [(8, 2, 128, 16), (32, 4, 64, 8), (4, 4, 64, 32), (16, 1, 64, 16), (6, 2, 96, 16)],
                         ids=["llama3-gqa4-dim128", "gqa8-block8", "mha-block32", "group16", "dim96"])
def test_other_shapes_match_the_reference_and_keep_each_rows_bits(path, shape):
    """Other models' shapes (head_dim 96 and blocks of 8 are not tiled: the vector path takes them there):
    each row against the float64 reference, and a chunk's rows sharing tiles against each row alone."""
    num_heads, num_kv_heads, head_dim, block = shape
    if row_attention.unavailable_reason(num_heads, num_kv_heads, head_dim, torch.bfloat16, torch.device("cpu")):
        pytest.skip("shape not taken")
    lengths = [1, 40, 130, 300]
    q, kv_layer, tables = _case(lengths, seed=3, shape=shape)
    out = _apply(q, kv_layer, tables, [n - 1 for n in lengths], block)
    for i, n in enumerate(lengths):
        torch.testing.assert_close(out[i].double(), _reference(q[i], kv_layer, tables[i], n - 1, block),
                                   rtol=2 ** -6, atol=2 ** -7)
    rows = q[3:].expand(37, -1, -1)
    shared = _apply(rows, kv_layer, tables[3], list(range(263, 300)), block)
    for start, stop in ((0, 1), (5, 20), (36, 37)):
        assert torch.equal(_apply(rows[start:stop], kv_layer, tables[3], list(range(263 + start, 263 + stop)), block),
                           shared[start:stop]), (start, stop)
    assert torch.equal(shared[-1], out[3])


def test_write_kv_lays_out_a_cache_the_kernel_reads_and_keeps_the_plain_layout_without_tiles(path):
    lengths = [20, 70]
    q, kv_layer, tables = _case(lengths, seed=4)
    tiled = row_attention.is_tiled_layout(HEAD_DIM, BLOCK)
    assert tiled == (path == "amx")
    cache = _written(kv_layer, BLOCK)
    assert torch.equal(cache, kv_layer) != tiled  # the same bytes, rearranged within each block
    assert torch.equal(cache.view(-1, BLOCK * 2 * NUM_KV_HEADS * HEAD_DIM).sort(dim=1).values,
                       kv_layer.view(-1, BLOCK * 2 * NUM_KV_HEADS * HEAD_DIM).sort(dim=1).values)
    # Writing only some slots leaves the others as they were, in either layout.
    partial = cache.clone()
    row_attention.apply_write_kv(partial, kv_layer[:3, 0] * 0, kv_layer[:3, 1] * 0, torch.tensor([0, 17, 40]), BLOCK)
    assert (partial != cache).sum() > 0 and (partial != cache).sum() <= 3 * 2 * NUM_KV_HEADS * HEAD_DIM
