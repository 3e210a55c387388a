"""A GGUF file's tensors read in place: each equal to the gguf package's float32 dequantization, by HF name."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hearth.engine.loading.gguf_checkpoint import GGUFCheckpoint, reverse_permute_rows
from tests.engine.loading.kquant_files import HEADS, KV_HEADS


def _expected(path, gguf_name: str) -> torch.Tensor:
    from gguf import GGUFReader
    from gguf.quants import dequantize

    tensor = next(t for t in GGUFReader(str(path)).tensors if t.name == gguf_name)
    values = torch.from_numpy(np.array(dequantize(tensor.data, tensor.tensor_type), dtype=np.float32))
    if ".attn_q." in gguf_name or ".attn_k." in gguf_name:
        values = values[reverse_permute_rows(values.shape[0], HEADS if ".attn_q." in gguf_name else KV_HEADS)]
    return values


@pytest.mark.parametrize("kind", ["F32", "Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0"])
def test_every_tensor_equals_the_gguf_packages_dequantization(kquant_gguf, kind):
    path = kquant_gguf[kind]
    checkpoint = GGUFCheckpoint(path, HEADS, KV_HEADS)
    gguf_names = {"model.embed_tokens.weight": "token_embd.weight", "lm_head.weight": "output.weight",
                  "model.layers.1.self_attn.q_proj.weight": "blk.1.attn_q.weight",
                  "model.layers.1.self_attn.k_proj.weight": "blk.1.attn_k.weight",
                  "model.layers.1.self_attn.v_proj.weight": "blk.1.attn_v.weight",
                  "model.layers.1.mlp.down_proj.weight": "blk.1.ffn_down.weight",
                  "model.layers.1.input_layernorm.weight": "blk.1.attn_norm.weight"}
    for hf, gguf_name in gguf_names.items():
        expected = _expected(path, gguf_name)
        assert torch.equal(checkpoint.read(hf).float(), expected), hf
    q = _expected(path, "blk.1.attn_q.weight")
    assert torch.equal(checkpoint.read("model.layers.1.self_attn.q_proj.weight", rows=(64, 192)), q[64:192])
    assert torch.equal(checkpoint.read("model.layers.1.self_attn.q_proj.weight", cols=(32, 96)), q[:, 32:96])


def test_a_read_owns_its_memory(kquant_gguf):
    """A view would keep the file's mapping alive for the life of the model."""
    weight = GGUFCheckpoint(kquant_gguf["F32"], HEADS, KV_HEADS).read("model.layers.0.input_layernorm.weight")
    assert weight.untyped_storage().nbytes() == weight.numel() * weight.element_size() and weight.is_contiguous()


def test_q8_blocks_are_the_files_own_and_give_its_dequantization(kquant_gguf):
    """A Q8_0 tensor's blocks (q, d) as the file holds them: their d q is the gguf package's dequantization,
    whole or by rows; float tensors have none."""
    path = kquant_gguf["Q8_0"]
    checkpoint = GGUFCheckpoint(path, HEADS, KV_HEADS)
    embed = _expected(path, "token_embd.weight")
    blocks = checkpoint.q8_blocks("model.embed_tokens.weight")
    assert blocks.q.dtype == torch.int8 and blocks.d.shape == (embed.shape[0], embed.shape[1] // 32)
    assert torch.equal(blocks.weights(), embed)
    assert torch.equal(checkpoint.q8_blocks("model.embed_tokens.weight", rows=(5, 40)).weights(), embed[5:40])
    assert checkpoint.q8_blocks("model.layers.1.input_layernorm.weight") is None  # float32


@pytest.mark.parametrize("file", ["Q4_K_M", "Q5_K_M", "Q6_K"])
def test_k_quant_blocks_are_the_files_own_and_give_its_dequantization(kquant_gguf, file):
    """Every K-quant tensor's blocks (q of at most 8 bits, its scale per 16 or 32, its minimum) as the file holds
    them: they give the gguf package's dequantization exactly, whole, by rows and by whole 32-column blocks."""
    path = kquant_gguf[file]
    checkpoint = GGUFCheckpoint(path, HEADS, KV_HEADS)
    seen = set()
    for name in sorted(checkpoint.names()):
        kind = checkpoint.type_name(name)
        if kind == "F32":
            assert checkpoint.q8_blocks(name) is None
            continue
        seen.add(kind)
        blocks, expected = checkpoint.q8_blocks(name), checkpoint.read(name)
        assert blocks.q.dtype == torch.int8 and blocks.block == (16 if kind == "Q6_K" else 32)
        assert (blocks.minimum is None) == (kind == "Q6_K"), (name, kind)
        assert torch.equal(blocks.weights(), expected), name
        assert torch.equal(checkpoint.q8_blocks(name, rows=(3, 19)).weights(), expected[3:19]), name
        assert torch.equal(checkpoint.q8_blocks(name, cols=(32, 96)).weights(), expected[:, 32:96]), name
        assert checkpoint.q8_blocks(name, cols=(16, 48)) is None  # inside a block
    assert seen >= {"Q6_K"} and len(seen) >= 2 - (file == "Q6_K"), seen


@pytest.mark.parametrize("quantization", ["int8", "int4"])
def test_a_q8_0_vocabulary_is_packed_from_its_blocks_without_a_float_round_trip(kquant_gguf, quantization,
                                                                                monkeypatch):
    """int8 and int4 keep a Q8_0 embedding and head in Q8_0 records: packed from the file's blocks, never read
    as float (~1 s of a start for the default model's 49k x 576 table), into the same records as the float
    path's (whose quantize_q8 gives a Q8_0 table back exactly)."""
    from hearth.engine.config import EngineConfig
    from hearth.engine.llm_engine import LLMEngine
    from hearth.engine.loading.registry import ModelEntry
    from hearth.kernels.model import vnni_linear

    if vnni_linear.unavailable_reason() is not None:
        pytest.skip(f"Q8_0 records need the C kernels: {vnni_linear.unavailable_reason()}")
    path = kquant_gguf["Q8_0"]
    read_as_float = []
    original = GGUFCheckpoint.read
    monkeypatch.setattr(GGUFCheckpoint, "read",
                        lambda self, name, *a, **k: read_as_float.append(name) or original(self, name, *a, **k))
    engine = LLMEngine(EngineConfig(model_path=str(path), quantization=quantization, max_num_seqs=2,
                                    kv_cache_memory_gib=0.05, max_model_len=256), ModelEntry(id="tiny", path=path))
    assert "model.embed_tokens.weight" not in read_as_float and "lm_head.weight" not in read_as_float
    head = engine.loaded.model.lm_head
    table = _expected(path, "output.weight")
    q, d = vnni_linear.quantize_q8(table)  # the float path's records, which give a Q8_0 table back exactly
    assert torch.equal(head.packed, vnni_linear.pack_q8(q, d))
