"""A Q4_K_M file, served as its types call for (`mixed`): its 4-bit projections in int4 records packed as they
are, its finer ones (Q6_K here) in 8-bit records as the file holds them, so it is closer to the file's own
float32 forward than int4 or int8, and smaller than int8. Every K-quant type, Q5_1 and Q5_0 are held at the
file's own values, up to the float16 rounding of their block scales."""

from __future__ import annotations

import pytest

from hearth.engine.config import EngineConfig
from hearth.engine.llm_engine import LLMEngine
from hearth.engine.loading.gguf_file import QUANTIZED_BITS, hf_name, projection_types
from hearth.engine.loading.registry import ModelEntry
from hearth.engine.sampling.sampling_params import SamplingParams
from tests.conftest import chat_prompt, run_to_completion
from tests.engine.loading.test_gguf_weights import _logits, skip_below_block_kernels

FUSED = {"qkv": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), "o": ("self_attn.o_proj",),
         "gate_up": ("mlp.gate_proj", "mlp.up_proj"), "down": ("mlp.down_proj",)}


def _engine(path, quantization: str, dtype: str = "float32") -> LLMEngine:
    entry = ModelEntry(id=f"tiny-{quantization}", path=path, max_model_len=256)
    return LLMEngine(EngineConfig(model_path=str(path), quantization=quantization, dtype=dtype, max_num_seqs=2,
                                  kv_cache_memory_gib=0.05), entry)


@pytest.fixture(scope="module")
def q4_k_m(kquant_gguf):
    return kquant_gguf["Q4_K_M"]


def test_each_projection_is_held_at_its_own_grid(q4_k_m):
    skip_below_block_kernels()
    assert ModelEntry(id="f", path=q4_k_m).serving_format() == "mixed"
    bits = {hf_name(name): QUANTIZED_BITS[kind] for name, kind in projection_types(q4_k_m).items()}
    assert set(bits.values()) == {4, 6}, "the fixture mixes Q4_K and Q6_K projections"
    engine = _engine(q4_k_m, "mixed", "bfloat16")  # as served: bf16 activations on the C kernels
    model = engine.loaded.model
    for i, layer in enumerate(model.layers):
        for linear, members in FUSED.items():
            finest = max(bits[f"model.layers.{i}.{member}.weight"] for member in members)
            assert layer[linear].form == ("q4" if finest == 4 else "q8k"), (i, linear, finest)
    # A layer's 4-bit gate_up beside its 8-bit down decodes in the one-call layer stack too.
    assert model.fused_layer_reason is None
    engine.add_request("a", chat_prompt(engine, "Hello"), SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True))
    assert len(run_to_completion(engine)["a"][0]) == 6


def test_it_is_closer_to_the_files_float32_forward_than_int4_or_int8_and_smaller_than_int8(q4_k_m):
    skip_below_block_kernels()
    reference = _engine(q4_k_m, "none")
    prompt = chat_prompt(reference, "The quick brown fox jumps over the lazy dog, twice over and again.")
    expected = _logits(reference, prompt)
    errors, sizes = {}, {}
    for quantization in ("mixed", "int4", "int8"):
        engine = _engine(q4_k_m, quantization)
        errors[quantization] = (_logits(engine, prompt) - expected).abs().mean().item()
        sizes[quantization] = engine.loaded.model.resident_weight_bytes()
    assert errors["mixed"] < errors["int4"], errors
    # Its Q4_K tensors are the file's own; int8 rounds them again, if finely.
    assert errors["mixed"] < errors["int8"], errors
    assert sizes["mixed"] < sizes["int8"], sizes


@pytest.mark.parametrize("quantization", ["mixed", "int8"])
def test_q5_0_projections_are_held_exactly_as_the_file_holds_them(kquant_gguf, tmp_path, quantization):
    """Q5_0 (what llama-quantize writes where rows are not whole 256-blocks, most of the default model's Q4_K_M)
    is w = d (q - 16) per 32: Q5 records hold each block's d and q + 16 (with minimum -16 d) in 6 bits a weight,
    so every weight is the gguf package's dequantization exactly, where quantizing the float values again (as
    before) was not."""
    import torch

    from hearth.engine.loading.gguf_checkpoint import GGUFCheckpoint
    from tests.engine.loading import kquant_files

    skip_below_block_kernels()
    from hearth.kernels.model import vnni_linear

    path = kquant_files.write_float32_llama(tmp_path / "tiny-q5_0.gguf", vocab=kquant_files.vocab_of(kquant_gguf["Q8_0"]),
                                           projection_type="Q5_0")
    engine = _engine(path, quantization, "bfloat16")
    checkpoint = GGUFCheckpoint(path, kquant_files.HEADS, kquant_files.KV_HEADS)
    rounded_again = 0
    for i, layer in enumerate(engine.loaded.model.layers):
        for linear, members in FUSED.items():
            expected = torch.cat([checkpoint.read(f"model.layers.{i}.{member}.weight") for member in members])
            held = layer[linear]
            assert held.form == "q5", (i, linear)
            assert torch.equal(_served(held), expected), (i, linear)
            q, d = vnni_linear.quantize_q8(expected)  # the float path's records
            rounded_again += not torch.equal(vnni_linear.q8_rows(vnni_linear.pack_q8(q, d), torch.arange(len(q))),
                                             expected)
    assert rounded_again > 0, "quantizing the values again would have moved some weights"


def _served(held):
    """A packed projection's weights, float32 [out, in], as its kernel multiplies by them."""
    import torch

    from hearth.kernels.model import vnni_linear

    if held.form == "q8k":
        return vnni_linear.q8k_weights(held.packed)
    if held.form == "q5":
        return vnni_linear.q5_weights(held.packed)
    if held.form == "q8":
        return vnni_linear.q8_rows(held.packed, torch.arange(held.out_features))
    q, d, m = vnni_linear.unpack_q4(held.packed)
    return q.float() * d.repeat_interleave(32, 1) + m.repeat_interleave(32, 1)


@pytest.mark.parametrize("file", ["Q4_K_M", "Q5_K_M", "Q6_K", "Q5_1"])
def test_every_projection_and_the_head_hold_the_files_own_values(kquant_gguf, tmp_path, file):
    """Each weight is the file's own q times its block scale, plus its block minimum, with the scale and minimum
    rounded to float16 (a K-quant's d sc is a float16 times a 6- or 8-bit integer): within 2^-11 (|q s| + |m|)
    of the gguf package's dequantization. Quantizing the float values into Q8_0 records again, as before Q8K
    records, moved weights by up to an eighth of their step."""
    import torch

    from hearth.engine.loading.gguf_checkpoint import GGUFCheckpoint
    from hearth.engine.model.formats.values import Q8Blocks
    from hearth.kernels.model import vnni_linear
    from tests.engine.loading import kquant_files

    skip_below_block_kernels()
    if file == "Q5_1":  # not a llama-quantize preset: the gguf package's quantizer on the float32 fixture
        path = kquant_files.write_float32_llama(tmp_path / "tiny-q5_1.gguf",
                                               vocab=kquant_files.vocab_of(kquant_gguf["Q8_0"]), projection_type="Q5_1")
    else:
        path = kquant_gguf[file]
    engine = _engine(path, ModelEntry(id="f", path=path).serving_format(), "bfloat16")
    checkpoint = GGUFCheckpoint(path, kquant_files.HEADS, kquant_files.KV_HEADS)
    held = {f"{i}.{linear}": (layer[linear], [f"model.layers.{i}.{m}.weight" for m in members])
            for i, layer in enumerate(engine.loaded.model.layers) for linear, members in FUSED.items()}
    head_name = "lm_head.weight" if "lm_head.weight" in checkpoint.names() else "model.embed_tokens.weight"
    if checkpoint.type_name(head_name) != "F32":  # the written Q5_1 file keeps its vocabulary in float32
        held["head"] = (engine.loaded.model.lm_head, [head_name])
    worst_before, forms = 0.0, set()
    for key, (linear, names) in held.items():
        blocks = Q8Blocks.cat([checkpoint.q8_blocks(name) for name in names])
        scale, minimum = blocks.halves()
        scale16, minimum16 = scale.half().float(), minimum.half().float()
        expected = blocks.q.float() * scale16.repeat_interleave(16, 1) + minimum16.repeat_interleave(32, 1)
        served = _served(linear)
        forms.add(linear.form)
        assert torch.equal(served, expected), key
        exact = blocks.weights()
        bound = 2 ** -11 * ((blocks.q.float() * scale.repeat_interleave(16, 1)).abs() + minimum.repeat_interleave(32, 1).abs())
        assert ((served - exact).abs() <= bound).all(), key
        steps = scale.abs().repeat_interleave(16, 1)
        q, d = vnni_linear.quantize_q8(exact)
        requantized = vnni_linear.q8_rows(vnni_linear.pack_q8(q, d), torch.arange(len(q)))
        worst_before = max(worst_before, ((requantized - exact).abs() / steps.clamp_min(1e-30)).max().item())
    # Q6_K's scales per 16 take Q8K records; 5-bit blocks (Q5_K, Q5_1) take Q5's.
    assert forms & {"q5", "q8k"}, forms
    if file in ("Q5_K_M", "Q5_1"):
        assert "q5" in forms, forms
    assert worst_before > 0.05, "re-quantizing the values would have moved weights"
