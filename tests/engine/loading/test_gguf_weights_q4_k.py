"""A Q4_K_M file's Q4_K projections read as they are into the int4 values Q4_1 gives, and packed by the int4
format onto the C kernel, with the bound of its one rounding: the block scales to float16."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hearth.engine.loading.gguf_weights import read_gguf_q4
from hearth.engine.model.formats import Placement, parse_format
from hearth.engine.model.linear import BlockQuantizedLinear
from hearth.kernels.model import vnni_linear
from tests.engine.loading.kquant_files import HEADS, KV_HEADS, LAYERS, more_bits_layers

# float32's unit roundoff: the int4 form's zero = 8 d sc - dmin m is one float32 rounding away from exact.
U32 = 2.0 ** -24


def _dequantized(path, gguf_name: str) -> torch.Tensor:
    from gguf import GGUFReader
    from gguf.quants import dequantize

    tensor = next(t for t in GGUFReader(str(path)).tensors if t.name == gguf_name)
    num_cols, num_rows = (int(n) for n in tensor.shape)
    return torch.from_numpy(np.ascontiguousarray(dequantize(tensor.data, tensor.tensor_type))).reshape(num_rows, num_cols)


def _weights(q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    return (q.float() - 8) * scale.repeat_interleave(32, 1) + zero.repeat_interleave(32, 1)


def test_q4_k_projections_are_read_only_where_their_fused_partners_are_4_bit_too(kquant_gguf):
    """The more_bits_layers() hold attn_v and ffn_down in Q6_K: their attn_q and attn_k (fused with attn_v) are left
    to the float path, as are the Q6_K tensors; everything else in Q4_K is read as it is."""
    read = read_gguf_q4(kquant_gguf["Q4_K_M"], HEADS, KV_HEADS)
    expected = set()
    for layer in range(LAYERS):
        names = ["o", "gate", "up"] if layer in more_bits_layers() else ["q", "k", "v", "o", "gate", "up", "down"]
        expected |= {f"model.layers.{layer}.{'mlp' if n in ('gate', 'up', 'down') else 'self_attn'}.{n}_proj.weight"
                     for n in names}
    assert set(read) == expected


def test_q4_k_values_give_the_ggufs_own_weights_rows_in_hf_order(kquant_gguf):
    """Within one float32 rounding of zero and one of the sum, for every projection read; q rows un-permuted
    as transformers un-permutes them."""
    from hearth.engine.loading.gguf_checkpoint import reverse_permute_rows

    path = kquant_gguf["Q4_K_M"]
    for name, tensor in read_gguf_q4(path, HEADS, KV_HEADS).items():
        layer, kind = name.split(".")[2], name.split(".")[-2]
        gguf_kind = {"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output",
                     "gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down"}[kind]
        expected = _dequantized(path, f"blk.{layer}.{gguf_kind}.weight")
        if kind in ("q_proj", "k_proj"):
            expected = expected[reverse_permute_rows(expected.shape[0], HEADS if kind == "q_proj" else KV_HEADS)]
        values = tensor.rows()
        assert values.group_size == 32 and values.q.max().item() <= 15
        got = _weights(values.q, values.scale, values.zero)
        bound = 2 * U32 * (values.zero.abs().repeat_interleave(32, 1) + expected.abs())
        assert ((got - expected).abs() <= bound).all(), name
        # Column slices (tensor parallelism) split between super-blocks of 256, and only there.
        half = tensor.cols(0, 256)
        assert torch.equal(half.q, values.q[:, :256]) and torch.equal(half.zero, values.zero[:, :8])
        with pytest.raises(ValueError, match="256-weight blocks"):
            tensor.cols(0, 32)


def _float16_error(v: torch.Tensor) -> torch.Tensor:
    """Largest |fp16(v) - v|: half an ulp, 2^-11 |v| for normal float16 values, 2^-25 below them."""
    return torch.maximum(v.abs() * 2.0 ** -11, torch.full_like(v, 2.0 ** -25))


def test_a_packed_q4_k_layer_is_within_float16_rounding_of_its_block_scales(kquant_gguf):
    placement = Placement.here(torch.device("cpu"), torch.bfloat16)
    if not placement.has_c_kernels:
        pytest.skip(f"the int4 format packs GGUF blocks on the C kernels only: {placement.c_kernels_reason}")
    path = kquant_gguf["Q4_K_M"]
    values = read_gguf_q4(path, HEADS, KV_HEADS)["model.layers.0.mlp.down_proj.weight"].rows()
    reference = _dequantized(path, "blk.0.ffn_down.weight")  # [256, 512]
    layer = parse_format("int4").from_values([values], None, placement, adds_to_residual=True)
    assert isinstance(layer, BlockQuantizedLinear) and layer.form == "q4"

    # Weights: |dw| <= q |d(scale)| + |d(minimum)| for the float16 rounding of scale = d sc and minimum = -dmin m,
    # plus the float32 roundings of zero and of zero - 8 scale (the format's minimum).
    q, scale16, minimum16 = vnni_linear.unpack_q4(layer.packed)
    minimum = values.zero - 8 * values.scale
    weight_bound = (15 * _float16_error(values.scale) + _float16_error(minimum)
                    + 4 * U32 * (values.zero.abs() + 8 * values.scale)).repeat_interleave(32, 1)
    packed_weights = q.float() * scale16.repeat_interleave(32, 1) + minimum16.repeat_interleave(32, 1)
    assert ((packed_weights - reference).abs() <= weight_bound).all()
    assert not torch.equal(packed_weights, reference), "the bound is for a rounding that happens"

    # Outputs, float32, against a float32 matmul over the same bf16 activations: the weight bound, plus the
    # kernel's 16-bit activations (half of max |x| / 32639 per block of 32), plus float32 sums.
    torch.manual_seed(0)
    x = torch.randn(5, reference.shape[1]).to(torch.bfloat16)
    y = layer.matmul(x)
    assert y.dtype == torch.float32
    xf = x.float()
    expected = xf @ reference.t()
    step = xf.abs().reshape(5, -1, 32).amax(-1) / 32639 / 2  # [rows, blocks]
    activation_bound = step @ reference.abs().reshape(reference.shape[0], -1, 32).sum(-1).t()
    bound = xf.abs() @ weight_bound.t() + activation_bound + 2.0 ** -20 * (xf.abs() @ reference.abs().t())
    assert ((y - expected).abs() <= bound).all()


def test_each_tensor_a_format_rounds_again_is_named_by_type_at_start(kquant_gguf, caplog):
    """int4 names the Q6_K projections and the Q4_K ones fused with them (attn_q, attn_k of more_bits_layers()),
    which it rounds to 4-bit groups; its vocabulary tables are 8-bit records of the file's own blocks. mixed
    holds every tensor as the file does (int4 records or Q8K ones) and names none where those records run;
    nor does the float32 forward."""
    import logging

    from hearth.engine.loading.loader import log_rounded_tensors

    path = kquant_gguf["Q4_K_M"]
    packed = set(read_gguf_q4(path, HEADS, KV_HEADS))
    more = more_bits_layers()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="hearth.engine.loading.loader"):
        log_rounded_tensors(path, parse_format("int4"), torch.bfloat16, packed)
    (message,) = [r.getMessage() for r in caplog.records]
    if vnni_linear.unavailable_reason() is None:
        assert f"Q6_K: {2 * len(more)} (blk.{more[0]}.attn_v.weight, blk.{more[0]}.ffn_down.weight" in message, message
        assert f"Q4_K: {2 * len(more)} (blk.{more[0]}.attn_k.weight, blk.{more[0]}.attn_q.weight" in message, message
        assert "output.weight" not in message and "token_embd.weight" not in message, message
    else:  # its vocabulary tables are aten's int8 per channel
        assert f"Q6_K: {1 + 2 * len(more)} (output.weight, blk.{more[0]}.attn_v.weight" in message, message
        assert f"Q4_K: {1 + 2 * len(more)} (token_embd.weight, blk.{more[0]}.attn_k.weight" in message, message
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="hearth.engine.loading.loader"):
        log_rounded_tensors(path, parse_format("mixed"), torch.bfloat16, packed)
    assert (caplog.records == []) == (vnni_linear.unavailable_reason() is None)
    # Without the C kernels' records (float32 activations here; a GPU, a CPU below avx2) aten's int8 per channel
    # rounds the 8-bit blocks again, and says so.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="hearth.engine.loading.loader"):
        log_rounded_tensors(path, parse_format("mixed"), torch.float32, packed)
    (message,) = [r.getMessage() for r in caplog.records]
    assert f"Q6_K: {1 + 2 * len(more)} (output.weight, blk.{more[0]}.attn_v.weight" in message, message
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="hearth.engine.loading.loader"):
        log_rounded_tensors(path, parse_format("none"), torch.float32, set())
    assert caplog.records == []
