"""Weight-only int8 / int4 kernels against dequantize-then-matmul references, and their rows across batch sizes."""

from __future__ import annotations

import pytest
import torch

from hearth.kernels.model.weight_only import (
    apply_int4_linear,
    apply_int8_linear,
    dequantize_int4,
    dequantize_int8,
    pack_int4,
    quantize_int4_values,
    quantize_int8,
)

SHAPES = [(96, 64), (576, 576), (320, 1536)]


def _weight(out_features: int, in_features: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(out_features, in_features, generator=generator) * 0.05


def _input(rows: int, in_features: int, dtype: torch.dtype) -> torch.Tensor:
    return torch.randn(rows, in_features, generator=torch.Generator().manual_seed(1)).to(dtype)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("shape", SHAPES)
def test_int8_matches_dequantized_reference(shape, dtype):
    weight = _weight(*shape)
    qweight, scales = quantize_int8(weight, dtype)
    # Quantization itself: every weight within half a step of its grid point.
    assert (dequantize_int8(qweight, scales) - weight).abs().le(scales.float()[:, None] / 2 + 1e-6).all()
    x = _input(5, shape[1], dtype)
    reference = x.double() @ dequantize_int8(qweight, scales).double().t()
    result = apply_int8_linear(x, qweight, scales)
    assert result.dtype == dtype and result.shape == (5, shape[0])
    # float32 accumulation, then one rounding to the output dtype.
    tolerance = 1e-5 if dtype == torch.float32 else 2 ** -7
    torch.testing.assert_close(result.double(), reference, rtol=tolerance, atol=tolerance * reference.abs().max().item())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("group_size", [32, 64])
@pytest.mark.parametrize("shape", SHAPES)
def test_int4_matches_dequantized_reference(shape, group_size, dtype):
    weight = _weight(*shape)
    q, scale, zero = quantize_int4_values(weight, group_size)
    assert int(q.min()) >= 0 and int(q.max()) <= 15
    packed, scales_and_zeros = pack_int4(q, scale, zero, dtype)
    dequantized = dequantize_int4(q, scales_and_zeros, group_size)
    # Every weight within half a step (plus the rounding of scale and zero to dtype) of its grid point.
    step = scale.repeat_interleave(group_size, dim=1)
    slack = 0.0 if dtype == torch.float32 else 2 ** -8 * (8 * step + zero.abs().repeat_interleave(group_size, dim=1))
    assert ((dequantized - weight).abs() <= step / 2 + slack + 1e-6).all()
    x = _input(5, shape[1], dtype)
    reference = x.double() @ dequantized.double().t()
    result = apply_int4_linear(x, packed, group_size, scales_and_zeros)
    assert result.dtype == dtype and result.shape == (5, shape[0])
    tolerance = 1e-5 if dtype == torch.float32 else 2 ** -7
    torch.testing.assert_close(result.double(), reference, rtol=tolerance, atol=tolerance * reference.abs().max().item())


@pytest.mark.parametrize("kind", ["int8", "int4"])
def test_quantized_kernels_compute_each_row_the_same_whatever_the_row_count(kind):
    weight = _weight(576, 576)
    x = _input(70, 576, torch.bfloat16)
    if kind == "int8":
        qweight, scales = quantize_int8(weight, torch.bfloat16)
        run = lambda rows: apply_int8_linear(rows, qweight, scales)
    else:
        packed, scales_and_zeros = pack_int4(*quantize_int4_values(weight, 32), torch.bfloat16)
        run = lambda rows: apply_int4_linear(rows, packed, 32, scales_and_zeros)
    full = run(x)
    for num_rows in (1, 2, 3, 7, 8, 9, 16, 31, 33, 64):
        assert torch.equal(run(x[:num_rows]), full[:num_rows]), num_rows


def test_int4_values_of_a_q4_1_block_are_exact():
    """GGUF Q4_1 (w = d q + m) is scale = d, zero = m + 8 d: the kernel reproduces d q + m exactly in float32."""
    rows = torch.arange(16, dtype=torch.float32)[:, None]
    d = torch.tensor([[0.0125, 0.5]]) * (1 + rows)  # [16 rows, 2 blocks]
    m = torch.tensor([[-0.1, 2.0]]) - rows
    q = (torch.arange(64) + torch.arange(16)[:, None]).remainder(16)  # [16, 64]
    packed, scales_and_zeros = pack_int4(q, d, m + 8 * d, torch.float32)
    expected = d.repeat_interleave(32, 1) * q + m.repeat_interleave(32, 1)
    torch.testing.assert_close(dequantize_int4(q, scales_and_zeros, 32), expected, rtol=0, atol=1e-5)
    weights = apply_int4_linear(torch.eye(64), packed, 32, scales_and_zeros)  # [64, 16]: the weights themselves
    torch.testing.assert_close(weights.t(), expected, rtol=0, atol=1e-5)


def test_both_modes_run_on_this_cpu_and_a_device_without_kernels_is_named():
    from hearth.kernels.model.weight_only import unsupported_reason

    for mode in ("int8", "int4"):
        assert unsupported_reason(mode, torch.device("cpu"), torch.bfloat16) is None
        assert "no kernel on meta" in unsupported_reason(mode, torch.device("meta"), torch.bfloat16)
