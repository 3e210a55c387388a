"""hearth.kernels.model.fused_layer against the torch ops it replaces (engine/model/models/llama.py's), and each row's
result whatever the other rows (skipped, with the reason, where hearth.kernels.model.vnni_linear cannot run)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hearth.kernels.model import fused_layer, vnni_linear

pytestmark = [
    pytest.mark.usefixtures("c_kernel_level"),  # each test at every CPU level the C kernels are built for
    pytest.mark.skipif(fused_layer.unavailable_reason() is not None, reason=f"hearth.kernels.model.fused_layer: {fused_layer.unavailable_reason()}"),
]

DIM, HEADS, KV_HEADS, HEAD_DIM, INTER, EPS = 128, 4, 2, 32, 256, 1e-5


def _packed(form: str, n: int, k: int, seed: int) -> tuple[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(n, k, generator=generator) * 0.08
    if form == "q8":
        return form, vnni_linear.pack_q8(*vnni_linear.quantize_q8(weight))
    blocks = weight.reshape(n, -1, 32)
    low, high = blocks.amin(-1), blocks.amax(-1)
    scale = ((high - low) / 15).half().float()
    q = torch.round((blocks - low[..., None]) / scale[..., None]).clamp(0, 15).reshape(n, k)
    return form, vnni_linear.pack_q4(q, scale, low.half().float())


def _apply(linear, x, out_dtype=torch.bfloat16):
    form, packed = linear
    return (vnni_linear.apply_q4_linear if form == "q4" else vnni_linear.apply_q8_linear)(x, packed, out_dtype)


def _norm(h, weight):
    return weight * F.rms_norm(h, (h.shape[-1],), eps=EPS).to(torch.bfloat16)


def _inputs(rows: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    hidden = torch.randn(rows, DIM, generator=generator)
    norm_weight = (1 + 0.1 * torch.randn(DIM, generator=generator)).to(torch.bfloat16)
    angles = torch.rand(rows, HEAD_DIM // 2, generator=generator) * 6
    cos = torch.cat([angles.cos(), angles.cos()], -1).to(torch.bfloat16)
    sin = torch.cat([-angles.sin(), angles.sin()], -1).to(torch.bfloat16)
    return hidden, norm_weight, cos, sin


@pytest.mark.parametrize("form", ["q4", "q8"])
def test_the_front_is_norm_qkv_and_rotary_in_torch_bit_for_bit(form):
    hidden, norm_weight, cos, sin = _inputs(21)
    qkv = _packed(form, (HEADS + 2 * KV_HEADS) * HEAD_DIM, DIM, seed=1)
    q, k, v = fused_layer.apply_layer_front(hidden, norm_weight, EPS, qkv, HEADS, KV_HEADS, HEAD_DIM, cos, sin)
    # The norm as the torch path of these models computes it (apply_rms_norm), then torch's bf16 ops.
    out = _apply(qkv, fused_layer.apply_rms_norm(hidden, norm_weight, EPS))
    qk = out[:, :(HEADS + KV_HEADS) * HEAD_DIM].view(21, -1, HEAD_DIM)
    rotated = qk * cos[:, None] + torch.roll(qk, HEAD_DIM // 2, dims=-1) * sin[:, None]
    assert torch.equal(torch.cat([q, k], 1), rotated)
    assert torch.equal(v, out[:, (HEADS + KV_HEADS) * HEAD_DIM:].view(21, KV_HEADS, HEAD_DIM))
    # And within a bf16 rounding of torch's own norm (its sum of squares is added in another order).
    reference = _apply(qkv, _norm(hidden, norm_weight))
    torch.testing.assert_close(out.float(), reference.float(), rtol=2 ** -6, atol=2 ** -6)


# A mixed model (hearth.engine.model.formats.mixed) can hold gate_up and down in different forms.
@pytest.mark.parametrize("gate_up_form, down_form", [("q4", "q4"), ("q4", "q8"), ("q8", "q4")])
def test_the_back_matches_o_norm_and_the_mlp_in_torch(gate_up_form, down_form):
    hidden, norm_weight, _, _ = _inputs(19, seed=2)
    attn = torch.randn(19, HEADS * HEAD_DIM, generator=torch.Generator().manual_seed(3)).to(torch.bfloat16)
    o, gate_up, down = (_packed("q4", DIM, HEADS * HEAD_DIM, 4), _packed(gate_up_form, 2 * INTER, DIM, 5),
                        _packed(down_form, DIM, INTER, 6))
    expected = hidden + _apply(o, attn, torch.float32)
    gate, up = _apply(gate_up, _norm(expected, norm_weight)).chunk(2, dim=-1)
    expected = expected + _apply(down, F.silu(gate) * up, torch.float32)
    result = hidden.clone()
    fused_layer.apply_layer_back(result, attn, o, norm_weight, EPS, gate_up, down, INTER)
    torch.testing.assert_close(result, expected, rtol=2 ** -6, atol=2 ** -6 * expected.abs().max().item())
    assert not torch.equal(result, hidden)


def test_a_rows_result_does_not_depend_on_the_other_rows():
    hidden, norm_weight, cos, sin = _inputs(40, seed=7)
    qkv = _packed("q4", (HEADS + 2 * KV_HEADS) * HEAD_DIM, DIM, seed=8)
    whole = fused_layer.apply_layer_front(hidden, norm_weight, EPS, qkv, HEADS, KV_HEADS, HEAD_DIM, cos, sin)
    for rows in (slice(0, 1), slice(5, 22), slice(17, 40)):
        part = fused_layer.apply_layer_front(hidden[rows].contiguous(), norm_weight, EPS, qkv, HEADS, KV_HEADS, HEAD_DIM,
                                             cos[rows].contiguous(), sin[rows].contiguous())
        assert all(torch.equal(a, b[rows]) for a, b in zip(part, whole))
    o, gate_up, down = (_packed("q4", DIM, HEADS * HEAD_DIM, 9), _packed("q4", 2 * INTER, DIM, 10),
                        _packed("q4", DIM, INTER, 11))
    attn = whole[0].reshape(40, -1)
    result = hidden.clone()
    fused_layer.apply_layer_back(result, attn, o, norm_weight, EPS, gate_up, down, INTER)
    for rows in (slice(0, 1), slice(3, 35)):
        part = hidden[rows].clone()
        fused_layer.apply_layer_back(part, attn[rows].contiguous(), o, norm_weight, EPS, gate_up, down, INTER)
        assert torch.equal(part, result[rows])


def test_inputs_it_cannot_take_are_refused():
    hidden, norm_weight, cos, sin = _inputs(2)
    qkv = _packed("q4", (HEADS + 2 * KV_HEADS) * HEAD_DIM, DIM, seed=1)
    with pytest.raises(ValueError, match="hidden"):
        fused_layer.apply_layer_front(hidden.to(torch.bfloat16), norm_weight, EPS, qkv, HEADS, KV_HEADS, HEAD_DIM, cos, sin)
    with pytest.raises(ValueError, match="attn"):
        fused_layer.apply_layer_back(hidden, torch.zeros(2, HEADS * HEAD_DIM), qkv, norm_weight, EPS, qkv, qkv, INTER)


def test_the_norm_and_silu_on_their_own_are_torchs_within_a_bf16_rounding():
    hidden, norm_weight, _, _ = _inputs(33, seed=12)
    torch.testing.assert_close(fused_layer.apply_rms_norm(hidden, norm_weight, EPS).float(),
                               _norm(hidden, norm_weight).float(), rtol=2 ** -7, atol=2 ** -7)
    gate_up = (torch.randn(33, 2 * INTER, generator=torch.Generator().manual_seed(13)) * 3).to(torch.bfloat16)
    gate, up = gate_up.chunk(2, dim=-1)
    torch.testing.assert_close(fused_layer.apply_silu_mul(gate_up).float(), (F.silu(gate) * up).float(),
                               rtol=2 ** -7, atol=2 ** -7)


def test_the_decode_stack_in_one_call_equals_the_per_layer_calls_bit_for_bit():
    """Two layers, three sequences decoding at positions 5, 17 and 40 of a random paged cache (block 16)."""
    from hearth.kernels.model.row_attention import apply_row_attention

    generator = torch.Generator().manual_seed(13)
    layers = [{"input_norm": (1 + 0.1 * torch.randn(DIM, generator=generator)).to(torch.bfloat16),
               "post_norm": (1 + 0.1 * torch.randn(DIM, generator=generator)).to(torch.bfloat16),
               "qkv": _packed("q4", (HEADS + 2 * KV_HEADS) * HEAD_DIM, DIM, 20 + 5 * i),
               "o": _packed("q8", DIM, HEADS * HEAD_DIM, 21 + 5 * i),
               "gate_up": _packed("q4", 2 * INTER, DIM, 22 + 5 * i),
               # The second layer's down is 8-bit beside its 4-bit gate_up, as in a mixed model.
               "down": _packed("q4" if i == 0 else "q8", DIM, INTER, 23 + 5 * i)}
              for i in range(2)]
    block_size, positions = 16, torch.tensor([5, 17, 40])
    block_tables = [[3], [0, 5], [1, 4, 2]]  # each sequence's blocks, out of order in the cache
    tables = torch.tensor([b for t in block_tables for b in t], dtype=torch.int32)
    table_starts = torch.tensor([0, 1, 3])
    slots = torch.tensor([t[int(p) // block_size] * block_size + int(p) % block_size
                          for t, p in zip(block_tables, positions)])
    kv = torch.randn(2, 6 * block_size, 2, KV_HEADS, HEAD_DIM, generator=generator).to(torch.bfloat16)
    hidden, _, cos, sin = _inputs(3, seed=14)

    expected_hidden, expected_kv = hidden.clone(), kv.clone()
    for index, layer in enumerate(layers):
        q, k, v = fused_layer.apply_layer_front(expected_hidden, layer["input_norm"], EPS, layer["qkv"], HEADS, KV_HEADS,
                                                HEAD_DIM, cos, sin)
        expected_kv[index].index_copy_(0, slots, torch.stack((k, v), dim=1))
        attn = apply_row_attention(q, expected_kv[index], tables, table_starts, positions, block_size, 0.2)
        fused_layer.apply_layer_back(expected_hidden, attn.reshape(3, -1), layer["o"], layer["post_norm"], EPS,
                                     layer["gate_up"], layer["down"], INTER)

    fused_layer.apply_decode_layers(hidden, fused_layer.LayerStack(layers), EPS, HEADS, HEAD_DIM, INTER, cos, sin, kv,
                                    slots, tables, table_starts, positions, block_size, 0.2)
    assert torch.equal(hidden, expected_hidden)
    assert torch.equal(kv, expected_kv)
    assert not torch.equal(hidden, _inputs(3, seed=14)[0])
