"""The C kernels' text is the same at every CPU level; only csrc/simd.h's primitives differ. Their float
operations are the same IEEE operations in the same order, and their integer dot products are exact, so
each level's build gives every other level's bits. Checked for each pair of levels this machine runs."""

from __future__ import annotations

import itertools

import pytest
import torch

from hearth.kernels.model import fused_layer, row_attention, vnni_linear
from tests.conftest import C_KERNEL_LEVELS, capped_at

PAIRS = list(itertools.combinations(C_KERNEL_LEVELS, 2))
pytestmark = pytest.mark.skipif(not PAIRS, reason=f"fewer than two C kernel levels here ({C_KERNEL_LEVELS})")


def _at_each(pair, compute):
    results = []
    for level in pair:
        with capped_at(level):
            results.append(compute())
    return results


def _linear_inputs(n=320, k=1536, rows=7):
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(n, k, generator=generator) * 0.05
    x = (torch.randn(rows, k, generator=generator) * 2).to(torch.bfloat16)
    x[0, :32] = 0  # a zero block
    q = torch.randint(0, 16, (n, k), generator=generator)
    d = (torch.rand(n, k // 32, generator=generator) * 0.02).half().float()
    m = (-torch.rand(n, k // 32, generator=generator) * 0.15).half().float()
    q8 = vnni_linear.quantize_q8(weight)
    q8[0][:, :32] = 127  # the largest unsigned byte (255) the Q8 record holds
    q8k = (torch.randint(-128, 128, (n, k), generator=generator),
           ((torch.rand(n, k // 16, generator=generator) - 0.3) * 0.002).half().float(), m)
    q5 = torch.randint(0, 32, (n, k), generator=generator)
    return x, {"q4": vnni_linear.pack_q4(q, d, m), "q5": vnni_linear.pack_q5(q5, d, m), "q8": vnni_linear.pack_q8(*q8),
               "q8k": vnni_linear.pack_q8k(*q8k),
               "b16": vnni_linear.pack_b16(weight.to(torch.bfloat16))}


@pytest.mark.parametrize("pair", PAIRS, ids=["-".join(p) for p in PAIRS])
@pytest.mark.parametrize("form", ["q4", "q5", "q8", "q8k", "b16"])
@pytest.mark.parametrize("out_dtype", [torch.float32, torch.bfloat16])
def test_linear_kernels_give_the_same_bits_at_each_level(pair, form, out_dtype):
    x, packed = _linear_inputs()
    apply = {"q4": vnni_linear.apply_q4_linear, "q5": vnni_linear.apply_q5_linear, "q8": vnni_linear.apply_q8_linear,
             "q8k": vnni_linear.apply_q8k_linear, "b16": vnni_linear.apply_b16_linear}[form]
    low, high = _at_each(pair, lambda: apply(x, packed[form], out_dtype))
    assert torch.equal(low, high)


@pytest.mark.parametrize("pair", PAIRS, ids=["-".join(p) for p in PAIRS])
def test_row_attention_gives_the_same_bits_at_each_level(pair):
    heads, kv_heads, head_dim, block = 9, 3, 64, 16
    generator = torch.Generator().manual_seed(1)
    kv = (torch.randn(40 * block, 2, kv_heads, head_dim, generator=generator) * 2).to(torch.bfloat16)
    q = torch.randn(3, heads, head_dim, generator=generator).to(torch.bfloat16)

    def attend():
        if row_attention._has_amx():
            row_attention.use_amx(False)  # the tile path is its own numerics (test_row_attention)
        cache = torch.zeros_like(kv)
        row_attention.apply_write_kv(cache, kv[:, 0], kv[:, 1], torch.arange(kv.shape[0]), block)
        out = row_attention.apply_row_attention(q, cache, torch.arange(40, dtype=torch.int32),
                                                torch.zeros(3, dtype=torch.int64), torch.tensor([5, 200, 639]),
                                                block, head_dim ** -0.5)
        row_attention.use_amx(True)
        return out

    low, high = _at_each(pair, attend)
    assert torch.equal(low, high)


@pytest.mark.parametrize("pair", PAIRS, ids=["-".join(p) for p in PAIRS])
def test_the_norm_and_silu_give_the_same_bits_at_each_level(pair):
    generator = torch.Generator().manual_seed(2)
    hidden = torch.randn(5, 200, generator=generator) * 3
    weight = (1 + 0.1 * torch.randn(200, generator=generator)).to(torch.bfloat16)
    gate_up = (torch.randn(5, 2 * 200, generator=generator) * 4).to(torch.bfloat16)
    low, high = _at_each(pair, lambda: (fused_layer.apply_rms_norm(hidden, weight, 1e-5),
                                        fused_layer.apply_silu_mul(gate_up)))
    assert torch.equal(low[0], high[0]) and torch.equal(low[1], high[1])
