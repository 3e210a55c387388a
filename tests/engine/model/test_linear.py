"""A prefill chunk's rows through a linear layer: the same wherever the chunk was cut, in every mode."""

from __future__ import annotations

import pytest
import torch

from hearth.engine.model.formats import parse_format
from hearth.engine.model.linear_factory import LinearFactory
from tests.conftest import skip_unless_mode_runs

CHUNK = 128


@pytest.mark.parametrize("mode, dtype", [("none", torch.bfloat16), ("none", torch.float32), ("bf16", torch.bfloat16),
                                         ("int8", torch.bfloat16), ("int4", torch.bfloat16)])
def test_chunk_rows_equal_whole_chunk_rows_cut_anywhere(mode, dtype, cpu_level):
    skip_unless_mode_runs(mode)
    factory = LinearFactory(parse_format(mode), dtype, torch.device("cpu"))
    generator = torch.Generator().manual_seed(5)
    linear = factory.linear(torch.randn(384, 576, generator=generator) * 0.05, None)
    rows = torch.randn(CHUNK, 576, generator=generator).to(dtype)
    whole = linear.matmul_in_chunk(rows, 0, CHUNK)
    # A prompt ending early in the chunk, a cache hit starting it late, one row, and every count for the
    # kernels that claim to compute each row on its own at any row count.
    cuts = [(0, 100), (96, 32), (40, 1), (0, 1), (17, 50)]
    if linear.is_row_count_invariant:
        cuts += [(0, n) for n in range(1, CHUNK)]
    for offset, num_rows in cuts:
        part = linear.matmul_in_chunk(rows[offset:offset + num_rows], offset, CHUNK)
        assert torch.equal(part, whole[offset:offset + num_rows]), (offset, num_rows)
