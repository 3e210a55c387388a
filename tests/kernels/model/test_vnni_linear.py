"""The block-quantized and bf16-record kernels against exact references, their packing, and their rows at every
row count, at each CPU level they are built for (skipped, with the reason, where they cannot be built)."""

from __future__ import annotations

import pytest
import torch

from hearth.kernels.model import vnni_linear

pytestmark = [
    pytest.mark.usefixtures("c_kernel_level"),  # each test at every CPU level the C kernels are built for
    pytest.mark.skipif(vnni_linear.unavailable_reason() is not None, reason=f"hearth.kernels.model.vnni_linear: {vnni_linear.unavailable_reason()}"),
]

SHAPES = [(16, 32), (96, 64), (576, 576), (320, 1536)]


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _q4_values(n: int, k: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q in 0..15, d and m as a GGUF Q4_1 tensor holds them (float16 values)."""
    generator = _generator(seed)
    q = torch.randint(0, 16, (n, k), generator=generator)
    d = (torch.rand(n, k // 32, generator=generator) * 0.02).half().float()
    m = (-torch.rand(n, k // 32, generator=generator) * 0.15).half().float()
    return q, d, m


def _input(rows: int, k: int, seed: int = 1) -> torch.Tensor:
    x = torch.randn(rows, k, generator=_generator(seed)) * 2
    x[0, :32] = 0  # an all-zero block (scale 0)
    return x.to(torch.bfloat16)


def _sixteen_bit(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The kernels' activations: x16 [rows, k / 32, 32] (exact integers as float64) and dx [rows, k / 32, 1]."""
    blocks = x.float().reshape(x.shape[0], -1, 32)
    amax = blocks.abs().amax(-1, keepdim=True)
    # A true float32 division, as the kernel's (torch's `scalar / tensor` multiplies by a reciprocal).
    inverse = torch.where(amax > 0, torch.full_like(amax, 32639.0) / amax, torch.zeros_like(amax))
    return torch.round(blocks * inverse).clamp(-32639, 32639).double(), (amax / 32639.0).double()


def _reference(x: torch.Tensor, weight_blocks: torch.Tensor) -> torch.Tensor:
    """sum over blocks of dx * dot(x16, w), in float64: what the kernels compute before their float32 sums."""
    x16, dx = _sixteen_bit(x)
    return torch.einsum("rbk,nbk->rn", x16 * dx, weight_blocks.double())


@pytest.mark.parametrize("shape", SHAPES)
def test_q4_packs_losslessly_and_matches_its_reference(shape):
    n, k = shape
    q, d, m = _q4_values(n, k)
    packed = vnni_linear.pack_q4(q, d, m)
    assert packed.shape == (n // 16, k // 32, vnni_linear.Q4_RECORD_BYTES)
    unpacked_q, unpacked_d, unpacked_m = vnni_linear.unpack_q4(packed)
    assert torch.equal(unpacked_q, q.to(torch.uint8)) and torch.equal(unpacked_d, d) and torch.equal(unpacked_m, m)
    x = _input(9, k)
    weight_blocks = q.double().reshape(n, -1, 32) * d.double()[..., None] + m.double()[..., None]
    reference = _reference(x, weight_blocks)
    # float32 accumulation over k / 32 blocks: a few float32 roundings of the partial sums.
    for out_dtype, tolerance in ((torch.float32, 1e-5), (torch.bfloat16, 2 ** -8)):
        result = vnni_linear.apply_q4_linear(x, packed, out_dtype)
        assert result.dtype == out_dtype and result.shape == (9, n)
        torch.testing.assert_close(result.double(), reference, rtol=tolerance, atol=tolerance * reference.abs().max().item())
    # 16-bit activations: within bf16's rounding of a float32 matmul over the same bf16 activations.
    plain = x.double() @ weight_blocks.reshape(n, k).t()
    torch.testing.assert_close(vnni_linear.apply_q4_linear(x, packed, torch.float32).double(), plain, rtol=2 ** -9,
                               atol=2 ** -12 * plain.abs().max().item())


@pytest.mark.parametrize("shape", SHAPES)
def test_q8_packs_gives_back_a_q8_0_tensor_and_matches_its_reference(shape):
    n, k = shape
    weight = torch.randn(n, k, generator=_generator(3)) * 0.05
    q, d = vnni_linear.quantize_q8(weight)
    assert int(q.abs().max()) == 127
    dequantized = q.float().reshape(n, -1, 32) * d[..., None]
    # Quantizing a Q8_0 tensor's float32 dequantization gives back its own q and d exactly.
    requantized_q, requantized_d = vnni_linear.quantize_q8(dequantized.reshape(n, k))
    assert torch.equal(requantized_q, q) and torch.equal(requantized_d, d)
    packed = vnni_linear.pack_q8(q, d)
    assert torch.equal(vnni_linear.unpack_q8(packed)[0], q) and torch.equal(vnni_linear.unpack_q8(packed)[1], d)
    rows = torch.tensor([0, n - 1, 17 % n, 5])
    assert torch.equal(vnni_linear.q8_rows(packed, rows), dequantized.reshape(n, k)[rows])
    x = _input(9, k)
    reference = _reference(x, dequantized)
    result = vnni_linear.apply_q8_linear(x, packed, torch.float32)
    torch.testing.assert_close(result.double(), reference, rtol=1e-5, atol=1e-5 * reference.abs().max().item())


def _q8k_values(n: int, k: int, seed: int = 5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q in -128..127 (the whole byte range the record takes), a scale per 16 inputs and a minimum per 32, as
    float16 values (a Q6_K's d sc, a Q5_K's d sc and -dmin m)."""
    generator = _generator(seed)
    q = torch.randint(-128, 128, (n, k), generator=generator)
    q[0, :32], q[1, :32] = 127, -128
    scale = ((torch.rand(n, k // 16, generator=generator) - 0.3) * 0.002).half().float()
    minimum = (-torch.rand(n, k // 32, generator=generator) * 0.15).half().float()
    return q, scale, minimum


@pytest.mark.parametrize("shape", SHAPES)
def test_q8k_packs_losslessly_and_matches_its_reference(shape):
    """A scale per half block (Q6_K's 16 inputs), of either sign, and a minimum: each half's exact dot product
    scaled apart."""
    n, k = shape
    q, scale, minimum = _q8k_values(n, k)
    packed = vnni_linear.pack_q8k(q, scale, minimum)
    assert packed.shape == (n // 16, k // 32, vnni_linear.Q8K_RECORD_BYTES)
    unpacked_q, unpacked_scale, unpacked_minimum = vnni_linear.unpack_q8k(packed)
    assert torch.equal(unpacked_q, q.to(torch.int8)) and torch.equal(unpacked_scale, scale)
    assert torch.equal(unpacked_minimum, minimum)
    weights = q.float() * scale.repeat_interleave(16, 1) + minimum.repeat_interleave(32, 1)
    assert torch.equal(vnni_linear.q8k_weights(packed), weights)
    rows = torch.tensor([0, n - 1, 17 % n, 5])
    assert torch.equal(vnni_linear.q8k_rows(packed, rows), weights[rows])
    x = _input(9, k)
    reference = _reference(x, weights.reshape(n, -1, 32))
    for out_dtype, tolerance in ((torch.float32, 1e-5), (torch.bfloat16, 2 ** -8)):
        result = vnni_linear.apply_q8k_linear(x, packed, out_dtype)
        assert result.dtype == out_dtype and result.shape == (9, n)
        torch.testing.assert_close(result.double(), reference, rtol=tolerance, atol=tolerance * reference.abs().max().item())
    # No minimum (Q6_K): zeros.
    assert torch.equal(vnni_linear.unpack_q8k(vnni_linear.pack_q8k(q, scale, None))[2], torch.zeros(n, k // 32))


def _q5_values(n: int, k: int, seed: int = 6) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q over the whole 0..31 range, every fifth-bit position set somewhere; d and m as float16 values."""
    generator = _generator(seed)
    q = torch.randint(0, 32, (n, k), generator=generator)
    q[0, :32], q[1, :32] = 31, 16
    d = (torch.rand(n, k // 32, generator=generator) * 0.01).half().float()
    m = (-torch.rand(n, k // 32, generator=generator) * 0.15).half().float()
    return q, d, m


@pytest.mark.parametrize("shape", SHAPES)
def test_q5_packs_losslessly_and_matches_its_reference(shape):
    """5-bit q with d and m per 32 in 6 bits a weight: the fifth bits come back where they were, and the
    product is the weights' within float32 summation."""
    n, k = shape
    q, d, m = _q5_values(n, k)
    packed = vnni_linear.pack_q5(q, d, m)
    assert packed.shape == (n // 16, k // 32, vnni_linear.Q5_RECORD_BYTES)
    unpacked_q, unpacked_d, unpacked_m = vnni_linear.unpack_q5(packed)
    assert torch.equal(unpacked_q, q.to(torch.uint8)) and torch.equal(unpacked_d, d) and torch.equal(unpacked_m, m)
    weights = q.float() * d.repeat_interleave(32, 1) + m.repeat_interleave(32, 1)
    assert torch.equal(vnni_linear.q5_weights(packed), weights)
    rows = torch.tensor([0, n - 1, 17 % n, 5])
    assert torch.equal(vnni_linear.q5_rows(packed, rows), weights[rows])
    x = _input(9, k)
    reference = _reference(x, weights.reshape(n, -1, 32))
    for out_dtype, tolerance in ((torch.float32, 1e-5), (torch.bfloat16, 2 ** -8)):
        result = vnni_linear.apply_q5_linear(x, packed, out_dtype)
        assert result.dtype == out_dtype and result.shape == (9, n)
        torch.testing.assert_close(result.double(), reference, rtol=tolerance, atol=tolerance * reference.abs().max().item())


def test_q5_records_of_4_bit_values_give_q4s_bits():
    """The same float32 operations in the same order as q4_linear, on the same exact integers: a Q4_1 weight
    held in Q5 records gives the same bits, so the record a GGUF type lands in changes only its bytes."""
    n, k = 320, 576
    q, d, m = _q4_values(n, k)
    x = _input(20, k, seed=3)
    for out_dtype in (torch.float32, torch.bfloat16):
        assert torch.equal(vnni_linear.apply_q5_linear(x, vnni_linear.pack_q5(q, d, m), out_dtype),
                           vnni_linear.apply_q4_linear(x, vnni_linear.pack_q4(q, d, m), out_dtype))


@pytest.mark.parametrize("form", ["q4", "q5", "q8", "q8k"])
def test_a_rows_result_is_the_same_at_every_row_count_and_thread_count(form):
    n, k = 320, 576
    if form == "q4":
        packed, apply = vnni_linear.pack_q4(*_q4_values(n, k)), vnni_linear.apply_q4_linear
    elif form == "q8k":
        packed, apply = vnni_linear.pack_q8k(*_q8k_values(n, k)), vnni_linear.apply_q8k_linear
    elif form == "q5":
        packed, apply = vnni_linear.pack_q5(*_q5_values(n, k)), vnni_linear.apply_q5_linear
    else:
        packed, apply = vnni_linear.pack_q8(*vnni_linear.quantize_q8(torch.randn(n, k, generator=_generator(4)))), \
            vnni_linear.apply_q8_linear
    x = _input(40, k, seed=7)
    whole = apply(x, packed, torch.float32)
    for rows in range(1, 40):
        assert torch.equal(apply(x[:rows], packed, torch.float32), whole[:rows]), rows
    assert torch.equal(apply(x[13:29], packed, torch.float32), whole[13:29])
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert torch.equal(apply(x, packed, torch.float32), whole)
    finally:
        torch.set_num_threads(threads)


def test_inputs_it_cannot_take_are_refused():
    packed = vnni_linear.pack_q4(*_q4_values(16, 64))
    with pytest.raises(ValueError, match="bfloat16"):
        vnni_linear.apply_q4_linear(torch.randn(2, 64), packed)
    with pytest.raises(ValueError, match=r"\[rows, 64\]"):
        vnni_linear.apply_q4_linear(torch.randn(2, 32).to(torch.bfloat16), packed)
    assert vnni_linear.apply_q4_linear(torch.empty(0, 64, dtype=torch.bfloat16), packed).shape == (0, 16)
    assert "tiles" in vnni_linear.unpackable_reason(24, 64, torch.ones(24, 2))
    assert "float16" in vnni_linear.unpackable_reason(16, 64, torch.full((16, 2), 1e6))


@pytest.mark.parametrize("form", ["q4", "q8"])
def test_the_amx_path_gives_the_vnni_paths_results_bit_for_bit(form):
    if not vnni_linear.use_amx(True):
        pytest.skip("this CPU or compiler has no AMX-INT8")
    n, k = 96, 1536
    if form == "q4":
        packed, apply = vnni_linear.pack_q4(*_q4_values(n, k, seed=5)), vnni_linear.apply_q4_linear
    else:
        packed, apply = vnni_linear.pack_q8(*vnni_linear.quantize_q8(torch.randn(n, k, generator=_generator(6)))), \
            vnni_linear.apply_q8_linear
    x = _input(53, k, seed=8)  # three groups of 16 rows on AMX, 5 rows on VNNI
    try:
        with_amx = {dtype: apply(x, packed, dtype) for dtype in (torch.float32, torch.bfloat16)}
        assert not vnni_linear.use_amx(False)
        for dtype, result in with_amx.items():
            assert torch.equal(apply(x, packed, dtype), result)
    finally:
        vnni_linear.use_amx(True)


@pytest.fixture(params=["amx", "vector"])
def b16_path(request):
    """Each of b16_linear's two paths (every row on one of them); the AMX one where this CPU has AMX-BF16."""
    is_amx = request.param == "amx"
    if vnni_linear.use_amx_bf16(is_amx) != is_amx:
        vnni_linear.use_amx_bf16(True)
        pytest.skip("this CPU or compiler has no AMX-BF16")
    yield request.param
    vnni_linear.use_amx_bf16(True)


@pytest.mark.parametrize("shape", SHAPES)
def test_b16_packs_losslessly_and_matches_a_float64_matmul_of_its_bf16_values(shape, b16_path):
    n, k = shape
    weight = torch.randn(n, k, generator=_generator(9)) * 0.05
    packed = vnni_linear.pack_b16(weight)
    assert packed.shape == (n // 16, k // 32, 1024)
    assert torch.equal(vnni_linear.unpack_b16(packed), weight.to(torch.bfloat16))
    x = _input(21, k, seed=10)
    reference = x.double() @ weight.to(torch.bfloat16).double().T
    result = vnni_linear.apply_b16_linear(x, packed, torch.float32)
    # float32 sums of exact products: within a few ulps of the largest partial sum per input.
    bound = 4 * k * torch.finfo(torch.float32).eps * (x.double().abs() @ weight.to(torch.bfloat16).double().abs().T)
    assert ((result.double() - reference).abs() <= bound).all()
    assert torch.equal(vnni_linear.apply_b16_linear(x, packed), result.to(torch.bfloat16))


def test_b16_rows_are_the_same_at_every_row_count_place_and_thread_count(b16_path):
    """Decode rows (a few) and prefill rows (many, whole AMX groups and a remainder) of one sequence must agree
    bit for bit, as must a row wherever its group puts it."""
    n, k = 320, 576
    packed = vnni_linear.pack_b16(torch.randn(n, k, generator=_generator(11)) * 0.05)
    x = _input(40, k, seed=12)
    whole = vnni_linear.apply_b16_linear(x, packed, torch.float32)
    for rows in range(1, 40):
        assert torch.equal(vnni_linear.apply_b16_linear(x[:rows], packed, torch.float32), whole[:rows]), rows
    assert torch.equal(vnni_linear.apply_b16_linear(x[13:29], packed, torch.float32), whole[13:29])
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert torch.equal(vnni_linear.apply_b16_linear(x, packed, torch.float32), whole)
    finally:
        torch.set_num_threads(threads)
