"""The committed fixtures llama-quantize made hold the types the K-quant tests mean to cover, come from the
float32 file the fixture rewrites, and are what llama-quantize makes again."""

from __future__ import annotations

import numpy as np
import pytest

from tests.engine.loading import kquant_files
from tests.engine.loading.kquant_files import LAYERS, more_bits_layers, tensor_types

MATRICES = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")


def _expected(base: str, more_bits: str, head: str) -> dict[str, str]:
    """llama.cpp's mix: attn_v and ffn_down of the layers its use_more_bits picks (layer 1 of 2) in more_bits."""
    types = {"token_embd.weight": base, "output.weight": head, "output_norm.weight": "F32"}
    for layer in range(LAYERS):
        for name in MATRICES:
            is_wider = name in ("attn_v", "ffn_down") and layer in more_bits_layers()
            types[f"blk.{layer}.{name}.weight"] = more_bits if is_wider else base
        types[f"blk.{layer}.attn_norm.weight"] = types[f"blk.{layer}.ffn_norm.weight"] = "F32"
    return types


def test_each_file_holds_the_types_of_its_name_with_no_fallback(kquant_gguf):
    assert 0 < len(more_bits_layers()) < LAYERS, "the Q4_K_M file mixes Q4_K and Q6_K layers"
    assert tensor_types(kquant_gguf["Q4_K_M"]) == _expected("Q4_K", "Q6_K", "Q6_K")
    assert tensor_types(kquant_gguf["Q5_K_M"]) == _expected("Q5_K", "Q6_K", "Q6_K")
    assert tensor_types(kquant_gguf["Q6_K"]) == _expected("Q6_K", "Q6_K", "Q6_K")
    assert tensor_types(kquant_gguf["Q8_0"]) == _expected("Q8_0", "Q8_0", "Q8_0")


def test_the_float32_file_is_the_one_the_committed_files_were_quantized_from(kquant_gguf):
    """Q8_0 of each block of 32 is within one step (its largest weight / 127) of the float32 weights."""
    from gguf import GGUFReader
    from gguf.quants import dequantize

    source = {t.name: np.array(t.data, np.float32) for t in GGUFReader(str(kquant_gguf["F32"])).tensors}
    tensors = GGUFReader(str(kquant_gguf["Q8_0"])).tensors
    assert sorted(t.name for t in tensors) == sorted(source)
    for tensor in tensors:
        weights = np.asarray(dequantize(tensor.data, tensor.tensor_type), np.float32).reshape(source[tensor.name].shape)
        blocks = source[tensor.name].reshape(-1, 32)
        step = np.abs(blocks).max(axis=1, keepdims=True) / 127
        assert (np.abs(weights.reshape(-1, 32) - blocks) <= step).all(), tensor.name


def test_remaking_the_files_with_llama_quantize_gives_the_committed_tensors(tmp_path):
    """Same names, types, shapes and bytes; the metadata too where the tokenizer's text is the same
    (pydoc_data.topics of the same Python release)."""
    reason = kquant_files.missing_reason()
    if reason is not None:
        pytest.skip(reason)
    made = kquant_files.make_files(tmp_path)
    for kind, committed in kquant_files.committed_files().items():
        assert kquant_files.tensors_of(made[kind]) == kquant_files.tensors_of(committed), kind
        remade, kept = kquant_files.metadata_of(made[kind]), kquant_files.metadata_of(committed)
        if remade[kquant_files.TEXT_KEY] == kept[kquant_files.TEXT_KEY]:
            assert remade == kept, kind
