"""GGUF 4-bit tensors loaded as they are: block decoding by hand, and the default model's logits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hearth.engine.chat import render_chat
from hearth.engine.config import EngineConfig
from hearth.engine.llm_engine import LLMEngine
from hearth.engine.loading.gguf_blocks import decode_blocks
from hearth.engine.loading.gguf_checkpoint import reverse_permute_rows
from hearth.engine.loading.gguf_weights import int4_values
from hearth.engine.loading.loader import source_gguf
from hearth.engine.model.attention import AttentionMetadata, PrefillSegment


def _q4_1_block(d: float, m: float, q: list[int]) -> bytes:
    nibbles = bytes(q[j] | q[j + 16] << 4 for j in range(16))
    return np.float16(d).tobytes() + np.float16(m).tobytes() + nibbles


def test_q4_1_blocks_decode_to_d_q_plus_m():
    q = [(7 * j + 3) % 16 for j in range(32)]
    rows = [_q4_1_block(0.5, -1.25, q) + _q4_1_block(0.03125, 2.0, q[::-1])]
    values = int4_values(decode_blocks(np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(1, 40), 1, "Q4_1"))
    weights = (values.q.float() - 8) * values.scale.repeat_interleave(32, 1) + values.zero.repeat_interleave(32, 1)
    expected = torch.tensor([[0.5 * v - 1.25 for v in q] + [0.03125 * v + 2.0 for v in q[::-1]]])
    assert torch.equal(weights, expected)


def test_q4_0_blocks_decode_to_d_times_q_minus_8():
    q = list(range(16)) * 2
    block = np.float16(0.25).tobytes() + bytes(q[j] | q[j + 16] << 4 for j in range(16))
    values = int4_values(decode_blocks(np.frombuffer(block, dtype=np.uint8).reshape(1, 18), 1, "Q4_0"))
    weights = (values.q.float() - 8) * values.scale + values.zero
    assert torch.equal(weights, torch.tensor([[0.25 * (v - 8) for v in q]]))


def test_reverse_permutation_matches_transformers():
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    rows = np.arange(24 * 3, dtype=np.float32).reshape(24, 3)
    expected = LlamaTensorProcessor()._reverse_permute_weights(rows, 4, 2)
    assert np.array_equal(rows[reverse_permute_rows(24, 2).numpy()], expected)


def _logits(engine: LLMEngine, token_ids: list[int]) -> torch.Tensor:
    """float32 logits of every prompt position, computed as one prefill chunk."""
    n = len(token_ids)
    md = AttentionMetadata(slot_mapping=torch.arange(n), prefills=[PrefillSegment(0, n, 0)])
    with torch.inference_mode():
        hidden = engine.loaded.model.forward(torch.tensor(token_ids), torch.arange(n), md, engine.kv_cache)
        return engine.loaded.model.compute_logits(hidden).float()


def test_native_q4_1_layers_keep_the_ggufs_own_numbers(default_entry):
    """In float32 activations, each 4-bit projection reproduces the GGUF's dequantized weights exactly
    (the converted folder holds them in float32), rows un-permuted as transformers does."""
    from safetensors import safe_open

    assert source_gguf(default_entry, default_entry.path) is not None, "make setup keeps the source GGUF"
    int4 = LLMEngine(EngineConfig(model_path=str(default_entry.path), quantization="int4", dtype="float32",
                                  max_num_seqs=2, kv_cache_memory_gib=0.1, max_model_len=512), default_entry)
    layer = int4.loaded.model.layers[3]
    with safe_open(str(default_entry.path / "model.safetensors"), framework="pt") as f:
        qkv = torch.cat([f.get_tensor(f"model.layers.3.self_attn.{n}_proj.weight") for n in "qkv"])
        down = f.get_tensor("model.layers.3.mlp.down_proj.weight")
    with torch.inference_mode():
        torch.testing.assert_close(layer["qkv"].matmul(torch.eye(576)).t(), qkv, rtol=0, atol=1e-6)
        torch.testing.assert_close(layer["down"].matmul(torch.eye(1536)).t(), down, rtol=0, atol=1e-6)


# Stated tolerance, bf16 activations as served: the 4-bit layers differ from the bf16 conversion by bf16
# roundings (of each weight there; of activations to 16 bits per block on the VNNI kernels, or of each
# block's scale and zero on aten's), the residual stream (float32 here, bf16 there) and the 8-bit head.
# Measured here: max |dlogit| 0.8 over a 20-token prompt.
MAX_LOGIT_DIFFERENCE = 2.0


def skip_below_block_kernels() -> None:
    """Q4_1 and Q8_0 blocks are served as they are only on the C kernels; below their level int4 runs on aten's
    kernels and the Q8_0 head is re-quantized per channel (a second rounding), which these bounds do not cover."""
    from hearth.kernels.model import vnni_linear

    if vnni_linear.unavailable_reason() is not None:
        pytest.skip(f"GGUF blocks as they are need the C kernels: {vnni_linear.unavailable_reason()}")


def test_native_q4_1_load_gives_the_dequantized_models_logits(default_entry):
    skip_below_block_kernels()
    int4 = LLMEngine(EngineConfig(model_path=str(default_entry.path), quantization="int4", max_num_seqs=2,
                                  kv_cache_memory_gib=0.1, max_model_len=512), default_entry)
    dequantized = LLMEngine(EngineConfig(model_path=str(default_entry.path), max_num_seqs=2,
                                         kv_cache_memory_gib=0.1, max_model_len=512), default_entry)
    prompt = render_chat(int4.tokenizer, [{"role": "user", "content": "Name three rivers in Europe."}])
    native, reference = _logits(int4, prompt), _logits(dequantized, prompt)
    assert (native - reference).abs().max().item() < MAX_LOGIT_DIFFERENCE
    # The next token the two would choose agrees at nearly every position of the prompt.
    assert (native.argmax(-1) == reference.argmax(-1)).float().mean().item() >= 0.9


def test_native_q4_1_load_is_closer_to_the_ggufs_own_logits_than_the_bf16_conversion(default_entry):
    """The GGUF's own numbers are its weights dequantized to float32, with float32 activations. Served in
    bf16 activations, the native 4-bit load (Q4_1 and Q8_0 blocks as they are, float32 residual stream and
    logits) must be at least as close to them as the bf16 conversion of the same weights is."""
    skip_below_block_kernels()
    def engine(dtype: str, quantization: str) -> LLMEngine:
        return LLMEngine(EngineConfig(model_path=str(default_entry.path), dtype=dtype, quantization=quantization,
                                      max_num_seqs=2, kv_cache_memory_gib=0.1, max_model_len=512), default_entry)

    from pydoc_data.topics import topics

    int4 = engine("bfloat16", "int4")
    # English prose present on every Python (benchmarks/bench_quality.py measures 4,096 tokens of it).
    prompt = int4.tokenizer.encode("\n\n".join(topics[name] for name in sorted(topics)))[:256]
    native = _logits(int4, prompt)
    del int4
    converted = _logits(engine("bfloat16", "none"), prompt)
    own = _logits(engine("float32", "none"), prompt)
    assert (native - own).abs().mean().item() <= (converted - own).abs().mean().item()
