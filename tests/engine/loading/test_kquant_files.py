"""The fixtures llama-quantize makes hold the types the K-quant tests mean to cover."""

from __future__ import annotations

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
