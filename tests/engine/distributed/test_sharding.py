"""Which slices a rank holds, the step broadcast's encoding, and how weight bytes are counted (no ranks run)."""

from __future__ import annotations

import pytest
import torch

from hearth.engine.config import EngineConfig
from hearth.engine.distributed.sharding import (
    CheckpointReader,
    LlamaPartition,
    head_ranges,
    resident_bytes,
    split_range,
)
from hearth.engine.distributed.step import ChunkInput, decode_step, encode_step
from hearth.engine.model.models.llama import LlamaShape

SMOLLM2 = LlamaShape(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_layers=30, num_heads=9,
                     num_kv_heads=3, head_dim=64, rms_norm_eps=1e-5, tie_word_embeddings=True, has_qkv_bias=False)


def test_split_range_cuts_whole_units_as_evenly_as_possible():
    assert [split_range(1536, 3, r, 32) for r in range(3)] == [(0, 512), (512, 1024), (1024, 1536)]
    assert [split_range(96, 2, r, 32) for r in range(2)] == [(0, 32), (32, 96)]
    assert [split_range(10, 3, r, 32) for r in range(3)] == [(0, 3), (3, 6), (6, 10)]  # unit does not divide: 1


@pytest.mark.parametrize("heads, kv_heads, world_size, expected", [
    (9, 3, 1, [((0, 9), (0, 3))]),
    (9, 3, 2, [((0, 3), (0, 1)), ((3, 9), (1, 3))]),  # uneven: the query heads follow their KV head
    (9, 3, 3, [((0, 3), (0, 1)), ((3, 6), (1, 2)), ((6, 9), (2, 3))]),
    (4, 2, 2, [((0, 2), (0, 1)), ((2, 4), (1, 2))]),
    (4, 2, 4, [((0, 1), (0, 1)), ((1, 2), (0, 1)), ((2, 3), (1, 2)), ((3, 4), (1, 2))]),  # KV heads replicated
])
def test_head_ranges(heads, kv_heads, world_size, expected):
    assert [head_ranges(heads, kv_heads, world_size, r) for r in range(world_size)] == expected


@pytest.mark.parametrize("heads, kv_heads, world_size", [(9, 3, 4), (4, 2, 3), (4, 2, 8)])
def test_head_counts_that_cannot_be_sharded_are_refused(heads, kv_heads, world_size):
    with pytest.raises(ValueError, match=f"tensor_parallel_size={world_size}"):
        head_ranges(heads, kv_heads, world_size, 0)


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_partitions_cover_the_model_once(world_size):
    parts = [LlamaPartition.build(SMOLLM2, r, world_size) for r in range(world_size)]
    for name, total in (("q_heads", 9), ("kv_heads", 3), ("intermediate", 1536), ("vocab", 49152)):
        ranges = [getattr(p, name) for p in parts]
        assert ranges[0][0] == 0 and ranges[-1][1] == total
        assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    assert all(p.intermediate[0] % 32 == 0 for p in parts)  # int4 groups are never cut
    assert sum(parts[0].vocab_widths) == 49152
    assert parts[0].max_kv_heads == max(p.num_kv_heads for p in parts)


def test_step_encoding_round_trips():
    chunks = [ChunkInput([5], 17, [3, 9], True, True), ChunkInput(list(range(40)), 0, [1, 2, 4], False, False),
              ChunkInput([7, 8], 32, [0, 6, 11], False, True)]
    copies = [(2, 12), (4, 13)]
    assert decode_step(encode_step(chunks, copies)) == (chunks, copies)
    assert decode_step(encode_step([], [])) == ([], [])


def test_resident_bytes_counts_storages_once_and_views_whole():
    whole = torch.zeros(100, 10)
    assert resident_bytes([whole, whole[:5]], {"again": whole}) == 4000
    assert resident_bytes(whole[:5].clone()) == 200


def test_checkpoint_slices_own_their_storage(tmp_path):
    from safetensors.torch import save_file

    weight = torch.arange(48, dtype=torch.float32).view(6, 8)
    save_file({"w": weight}, str(tmp_path / "model.safetensors"))
    with CheckpointReader(tmp_path) as reader:
        rows, cols = reader.read("w", rows=(2, 4)), reader.read("w", cols=(4, 8))
    assert torch.equal(rows, weight[2:4]) and torch.equal(cols, weight[:, 4:])
    assert resident_bytes(rows) == 2 * 8 * 4 and resident_bytes(cols) == 6 * 4 * 4


@pytest.mark.parametrize("field, value", [("tensor_parallel_size", 0), ("tensor_parallel_size", 4096),
                                          ("distributed_backend", "mpi")])
def test_config_names_the_field_out_of_range(field, value):
    with pytest.raises(ValueError, match=field):
        EngineConfig(model_path="m", **{field: value})
