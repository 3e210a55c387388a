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
