"""Q8_0, Q5_0, Q5_1, Q4_0, Q4_1, Q4_K, Q5_K and Q6_K blocks of files llama-quantize made (Q5_0, Q5_1, Q4_0 and Q4_1:
the gguf package's quantizer), decoded into integer values and block
scales, give exactly the gguf package's own dequantization of the same tensor."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hearth.engine.loading.gguf_blocks import DECODERS, decode_blocks

# The values each type's q may take (its bit width), as BlockValues stores them.
Q_RANGES = {"Q8_0": (-128, 127), "Q5_0": (-16, 15), "Q5_1": (0, 31), "Q4_0": (-8, 7), "Q4_1": (0, 15), "Q4_K": (0, 15),
            "Q5_K": (0, 31), "Q6_K": (-32, 31)}
# Types the tiny fixtures' rows (whole 256-blocks) never fall back to: their data comes from the gguf
# package's own quantizer (as llama-quantize's reference one) on random rows.
NOT_IN_FIXTURES = ("Q5_0", "Q5_1", "Q4_0", "Q4_1")


def _tensors_of(files: dict, kind: str):
    from gguf import GGUFReader

    for path in files.values():
        for tensor in GGUFReader(str(path)).tensors:
            if tensor.tensor_type.name == kind:
                yield tensor


@pytest.mark.parametrize("kind", sorted(DECODERS))
def test_blocks_decode_exactly_to_the_gguf_packages_dequantization(kind, kquant_gguf):
    """Exact (torch.equal in float32): each weight is one product of a float16 and an integer of at most 8
    bits (exact in float32) and, for those with a minimum, one addition, the same operations in the same order."""
    from gguf.quants import dequantize

    if kind in NOT_IN_FIXTURES:
        from gguf import GGMLQuantizationType
        from gguf.quants import quantize

        rows = np.random.default_rng(0).standard_normal((48, 576)).astype(np.float32) * 0.05
        tensors = [(quantize(rows, GGMLQuantizationType[kind]), GGMLQuantizationType[kind], rows.shape, kind)]
    else:
        tensors = [(t.data, t.tensor_type, tuple(int(n) for n in reversed(t.shape)), t.name)
                   for t in _tensors_of(kquant_gguf, kind)]
    assert tensors, f"no {kind} tensor in the fixtures"
    for data, kind_type, (num_rows, num_cols), name in tensors:
        values = decode_blocks(data.reshape(num_rows, -1), num_rows, kind)
        expected = torch.from_numpy(np.ascontiguousarray(dequantize(data, kind_type))).reshape(num_rows, num_cols)
        assert values.q.shape == (num_rows, num_cols)
        low, high = Q_RANGES[kind]
        assert low <= values.q.min().item() and values.q.max().item() <= high
        assert values.q.min().item() < low + 4 and values.q.max().item() > high - 4, "the range is used"
        assert torch.equal(values.weights(), expected), name


def test_a_few_selected_rows_decode_as_the_same_rows_of_the_whole(kquant_gguf):
    """A tensor-parallel rank or a permuted q/k reads rows out of order from the mmap."""
    tensor = next(t for t in _tensors_of(kquant_gguf, "Q6_K") if t.name == "output.weight")
    num_rows = int(tensor.shape[1])
    data = tensor.data.reshape(num_rows, -1)
    rows = np.array([7, 3, 300])
    whole = decode_blocks(data, num_rows, "Q6_K").weights()
    assert torch.equal(decode_blocks(data[rows], 3, "Q6_K").weights(), whole[torch.from_numpy(rows)])


def test_a_type_without_a_decoder_is_refused_naming_it():
    with pytest.raises(ValueError, match="IQ2_XS"):
        decode_blocks(np.zeros((1, 66), np.uint8), 1, "IQ2_XS")
