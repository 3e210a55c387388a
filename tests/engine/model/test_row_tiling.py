"""Row tiling: calibrated on each kernel, it keeps every row's result the same whatever the batch."""

from __future__ import annotations

import pytest
import torch

from hearth.engine.model.formats import parse_format
from hearth.engine.model.linear_factory import LinearFactory
from hearth.engine.model.row_tiling import RowTiling, RowTilingStore, calibrate_row_tiling
from tests.conftest import skip_unless_mode_runs


def test_tiles_cover_the_rows_in_calls_within_the_interval():
    tiling = RowTiling(min_rows=2, max_rows=8)
    assert tiling.tiles(1) == [(0, 1, 2)]
    assert tiling.tiles(8) == [(0, 8, 8)]
    assert tiling.tiles(19) == [(0, 8, 8), (8, 16, 8), (16, 19, 3)]
    assert tiling.tiles(17) == [(0, 8, 8), (8, 16, 8), (16, 17, 2)]
    assert RowTiling().tiles(300) == [(0, 300, 300)]
    with pytest.raises(ValueError, match="max_rows must be >= min_rows"):
        RowTiling(min_rows=4, max_rows=2)


def _blocked_kernel(block_rule):
    """A matmul whose accumulation order depends on the row count, as vendor GEMMs' does."""
    weight = torch.randn(16, 32, generator=torch.Generator().manual_seed(0))

    def kernel(x: torch.Tensor) -> torch.Tensor:
        split = block_rule(x.shape[0])
        products = x[:, :, None] * weight.t()[None]  # [rows, 32, 16]: elementwise, no GEMM of its own
        return products[:, :split].sum(1) + products[:, split:].sum(1)

    return kernel


def test_calibration_finds_the_row_counts_that_agree():
    # Rows 1-8 accumulate one way, 9+ another: calls are cut to at most 8 rows.
    assert calibrate_row_tiling(_blocked_kernel(lambda m: 5 if m <= 8 else 19), 32, torch.float32,
                                torch.device("cpu")) == RowTiling(min_rows=1, max_rows=8)
    # A lone row takes its own path (a GEMV): lone rows are padded to 2.
    assert calibrate_row_tiling(_blocked_kernel(lambda m: 5 if m == 1 else 19), 32, torch.float32,
                                torch.device("cpu")) == RowTiling(min_rows=2, max_rows=64)
    # Every row count agrees: only the measured range, 64 rows, per call.
    assert calibrate_row_tiling(_blocked_kernel(lambda m: 7), 32, torch.float32,
                                torch.device("cpu")) == RowTiling(min_rows=1, max_rows=64)


# The default model's projections (qkv, o, gate_up, down) and its vocabulary head.
SHAPES = [(960, 576), (576, 576), (3072, 576), (576, 1536), (49152, 576)]


@pytest.mark.parametrize("mode, dtype", [("none", torch.bfloat16), ("none", torch.float32), ("bf16", torch.bfloat16),
                                         ("int8", torch.bfloat16), ("int4", torch.bfloat16)])
def test_rows_are_identical_in_any_batch_size_for_every_mode(mode, dtype, cpu_level):
    skip_unless_mode_runs(mode)
    factory = LinearFactory(parse_format(mode), dtype, torch.device("cpu"))
    store = RowTilingStore(None)  # measured here, not read from an earlier run
    generator = torch.Generator().manual_seed(3)
    for out_features, in_features in SHAPES:
        linear = factory.linear(torch.randn(out_features, in_features, generator=generator) * 0.05, None)
        linear.calibrate(dtype, store)
        rows = torch.randn(80, in_features, generator=generator).to(dtype)
        alone = torch.cat([linear.rows_invariant(rows[i:i + 1]) for i in range(80)])
        for size in (2, 3, 5, 8, 9, 12, 16, 17, 31, 33, 40, 64, 65, 80):
            assert torch.equal(linear.rows_invariant(rows[:size]), alone[:size]), (out_features, in_features, size)
        # A row's result does not depend on its position in the batch either.
        order = torch.randperm(80, generator=generator)
        assert torch.equal(linear.rows_invariant(rows[order]), alone[order])


def test_calibrations_are_kept_per_machine_on_disk(tmp_path):
    store = RowTilingStore(tmp_path / "tilings.json")
    store.put(("dense", "bf16", 8, 8), torch.device("cpu"), RowTiling(min_rows=2, max_rows=32))
    reloaded = RowTilingStore(tmp_path / "tilings.json")
    assert reloaded.get(("dense", "bf16", 8, 8), torch.device("cpu")) == RowTiling(min_rows=2, max_rows=32)
    assert reloaded.get(("dense", "bf16", 8, 16), torch.device("cpu")) is None


def test_stores_sharing_a_file_keep_each_others_calibrations(tmp_path):
    """Two processes (tensor-parallel ranks) that opened the file before either wrote."""
    path = tmp_path / "tilings.json"
    first, second = RowTilingStore(path), RowTilingStore(path)
    first.put(("int4", "bf16", 32, 960, 576), torch.device("cpu"), RowTiling(max_rows=64))
    second.put(("int4", "bf16", 32, 480, 576), torch.device("cpu"), RowTiling(max_rows=64))
    reloaded = RowTilingStore(path)
    for shape in ((960, 576), (480, 576)):
        assert reloaded.get(("int4", "bf16", 32, *shape), torch.device("cpu")) == RowTiling(max_rows=64)


def test_a_quantized_mode_without_kernels_on_the_device_is_refused_before_loading():
    for mode in ("bf16", "int8", "int4"):
        with pytest.raises(ValueError, match=f"quantization={mode} cannot run here"):
            LinearFactory(parse_format(mode), torch.bfloat16, torch.device("meta"))
    LinearFactory(parse_format("none"), torch.bfloat16, torch.device("meta"))
