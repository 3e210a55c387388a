"""Linear layers of the native forward: dense (bf16 prepacked for oneDNN, or plain), int8, int4, or GGUF blocks on
AVX2 and above (BlockQuantizedLinear); the weight formats (hearth.engine.model.formats) build them.

Each layer is called in two ways:
- `matmul_in_chunk(x, ...)`: one kernel call over a prefill chunk's rows, computed as they are within
  their whole chunk (hearth.engine.model.attention): a kernel whose rows depend on the row count gets the
  chunk's other rows as zeros, so a row's result does not depend on where its prompt was cut.
- `rows_invariant(x)`: every row's result is the same whatever the row count, by calling the kernel only
  with row counts its RowTiling (hearth.engine.model.row_tiling) measured to agree. Decode rows and the rows
  sampled from use it, so a sequence's tokens do not depend on what else is batched.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from hearth.engine.model.row_tiling import RowTiling, RowTilingStore, calibrate_row_tiling
from hearth.kernels import cpu_isa
from hearth.kernels.model import vnni_linear
from hearth.kernels.model.weight_only import (
    apply_int4_linear,
    apply_int8_linear,
    pack_int4,
    quantize_int4_values,
    quantize_int8,
)

# Before calibration: one call over all rows.
_UNTILED = RowTiling()
_ONE_ROW = RowTiling(min_rows=1, max_rows=1)


class Linear:
    """y = x W^T (+ bias) for x [rows, in_features]; subclasses hold W in their own format."""

    in_features: int
    out_features: int
    bias: Tensor | None = None
    device: torch.device
    tiling: RowTiling | None = None

    def _kernel(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    @property
    def num_bytes(self) -> int:
        raise NotImplementedError

    @property
    def kernel_key(self) -> tuple:
        """Layers with equal keys run the same kernel configuration, so they share one RowTiling."""
        raise NotImplementedError

    # aten's int8/int4 CPU kernels compute each row's dot products on their own; their CUDA kernels tile
    # rows (not measured).
    has_per_row_cpu_kernel = False

    @property
    def is_row_count_invariant(self) -> bool:
        """The kernel computes each row on its own at any row count (tests/engine/model/test_linear.py)."""
        return self.has_per_row_cpu_kernel and self.device.type == "cpu"

    def matmul(self, x: Tensor) -> Tensor:
        out = self._kernel(x)
        return out if self.bias is None else out + self.bias

    def matmul_in_chunk(self, x: Tensor, row_offset: int, num_chunk_rows: int) -> Tensor:
        """x [n, in]: rows [row_offset, row_offset + n) of a chunk of num_chunk_rows rows."""
        num_rows = x.shape[0]
        if num_rows == num_chunk_rows or self.is_row_count_invariant:
            return self.matmul(x)
        padded = x.new_zeros(num_chunk_rows, x.shape[1])
        padded[row_offset:row_offset + num_rows] = x
        return self.matmul(padded)[row_offset:row_offset + num_rows]

    def calibrate(self, dtype: torch.dtype, store: RowTilingStore) -> None:
        # A kernel that computes each row on its own needs no measured row counts: any call size agrees (its
        # claim is checked at 1-80 rows by tests/engine/model/test_row_tiling.py). Measuring it anyway cost
        # ~2 min on a fresh cache, most of it the vocabulary head called ~6,000 rows' worth.
        if self.is_row_count_invariant:
            self.tiling = _UNTILED
            return
        key = self.kernel_key
        tiling = store.get(key, self.device)
        if tiling is None:
            tiling = calibrate_row_tiling(self._kernel, self.in_features, dtype, self.device)
            store.put(key, self.device, tiling)
        self.tiling = tiling


    def rows_invariant(self, x: Tensor) -> Tensor:
        tiles = (self.tiling or _UNTILED).tiles(x.shape[0])
        outs = []
        for start, stop, num_padded in tiles:
            chunk = x[start:stop]
            if num_padded > stop - start:
                chunk = torch.cat([chunk, chunk.new_zeros(num_padded - (stop - start), chunk.shape[1])])
                outs.append(self._kernel(chunk)[:stop - start])
            else:
                outs.append(self._kernel(chunk))
        out = outs[0] if len(outs) == 1 else torch.cat(outs)
        return out if self.bias is None else out + self.bias


class DenseLinear(Linear):
    """Weights in the model dtype; bf16 on CPU prepacked once into oneDNN's blocked layout.

    oneDNN otherwise repacks a bf16 weight on every call: with few rows that repacking, not the arithmetic,
    was most of the GEMM time (30 layers of 6144x576 at 8 rows: 17.5 ms plain, 12.8 ms prepacked; results
    bit-identical)."""

    def __init__(self, weight: Tensor, bias: Tensor | None, is_prepacked: bool,
                 output_dtype: torch.dtype | None = None) -> None:
        self.out_features, self.in_features = weight.shape
        self.dtype = weight.dtype
        # float32 from a lower-precision weight: a head where no kernel here gives float32 logits. The weight is
        # widened once, exactly (twice the bytes; only the generic CPU level builds one).
        self.output_dtype = output_dtype or weight.dtype
        self.is_prepacked = is_prepacked and self.output_dtype == weight.dtype
        self.device = weight.device
        self._num_bytes = weight.numel() * self.output_dtype.itemsize
        self.weight = (torch.ops.mkldnn._reorder_linear_weight(weight, 8) if self.is_prepacked
                       else weight.to(self.output_dtype))
        self.bias = bias

    def _kernel(self, x: Tensor) -> Tensor:
        if self.is_prepacked:
            return torch.ops.mkldnn._linear_pointwise(x, self.weight, None, "none", [], "")
        return F.linear(x.to(self.output_dtype), self.weight)

    @property
    def num_bytes(self) -> int:
        return self._num_bytes

    @property
    def kernel_key(self) -> tuple:
        return ("dense", self.dtype, self.output_dtype, self.is_prepacked, self.out_features, self.in_features)

    def calibrate(self, dtype: torch.dtype, store: RowTilingStore) -> None:
        """On CPU every row is its own call. A sampled calibration of oneDNN's and MKL's row tiling was
        data-dependent (bf16 576 x 1536 on AVX-512 without AMX: rows of 5+ or of 17+ row calls differed from
        lone rows, depending on the draw), so no measured interval can be trusted there."""
        if self.device.type == "cpu":
            self.tiling = _ONE_ROW
            return
        super().calibrate(dtype, store)



class Int8Linear(Linear):
    """Symmetric per-output-channel int8 weights (aten._weight_int8pack_mm)."""

    has_per_row_cpu_kernel = True

    def __init__(self, qweight: Tensor, scales: Tensor, bias: Tensor | None) -> None:
        self.out_features, self.in_features = qweight.shape
        self.qweight, self.scales, self.bias = qweight, scales, bias
        self.device = qweight.device

    def _kernel(self, x: Tensor) -> Tensor:
        # Activations in the scales' dtype: float32 scales make a float32 head (float32 logits).
        return apply_int8_linear(x.to(self.scales.dtype), self.qweight, self.scales)

    @property
    def num_bytes(self) -> int:
        return self.qweight.numel() + self.scales.numel() * self.scales.element_size()

    @property
    def kernel_key(self) -> tuple:
        return ("int8", self.scales.dtype, self.out_features, self.in_features)



class Int4Linear(Linear):
    """Asymmetric group-wise int4 weights (aten._weight_int4pack_mm[_for_cpu])."""

    has_per_row_cpu_kernel = True

    def __init__(self, packed: Tensor, scales_and_zeros: Tensor, group_size: int, out_features: int,
                 in_features: int, bias: Tensor | None) -> None:
        self.out_features, self.in_features = out_features, in_features
        self.packed, self.scales_and_zeros, self.group_size, self.bias = packed, scales_and_zeros, group_size, bias
        self.device = packed.device

    def _kernel(self, x: Tensor) -> Tensor:
        return apply_int4_linear(x, self.packed, self.group_size, self.scales_and_zeros)

    @property
    def num_bytes(self) -> int:
        return self.packed.numel() * self.packed.element_size() + self.scales_and_zeros.numel() * self.scales_and_zeros.element_size()

    @property
    def kernel_key(self) -> tuple:
        return ("int4", self.scales_and_zeros.dtype, self.group_size, self.out_features, self.in_features)



_BLOCK_KERNELS = {"q4": vnni_linear.apply_q4_linear, "q5": vnni_linear.apply_q5_linear, "q8": vnni_linear.apply_q8_linear,
                  "q8k": vnni_linear.apply_q8k_linear, "b16": vnni_linear.apply_b16_linear}


class BlockQuantizedLinear(Linear):
    """Weights in hearth.kernels.model.vnni_linear's records of 16 outputs x 32 inputs, on x86 CPUs from AVX2 up:
    GGUF-style Q4_1 (w = d q + m per block of 32), Q5 (the same with q in 0..31), Q8_0 (w = d q) or Q8K (8-bit q with a scale per 16 and a
    minimum per 32: any GGUF block form, K-quants included), whose blocks' dot products with bf16
    activations quantized to 16 bits are exact integers; or bf16 ("b16", the `bf16` mode), float32 sums of
    bf16 products. output_dtype float32 hands the float32 accumulator on unrounded (to the float32 residual
    stream, or as logits)."""

    has_per_row_cpu_kernel = True

    def __init__(self, form: str, packed: Tensor, out_features: int, in_features: int, bias: Tensor | None,
                 output_dtype: torch.dtype = torch.bfloat16) -> None:
        if form not in _BLOCK_KERNELS:
            raise ValueError(f"form must be one of {tuple(_BLOCK_KERNELS)}, got {form!r}")
        self.form, self.out_features, self.in_features = form, out_features, in_features
        self.packed, self.bias, self.output_dtype = packed, bias, output_dtype
        self.device = packed.device

    def _kernel(self, x: Tensor) -> Tensor:
        return _BLOCK_KERNELS[self.form](x, self.packed, self.output_dtype)

    @property
    def num_bytes(self) -> int:
        return self.packed.numel()

    @property
    def kernel_key(self) -> tuple:
        return (f"{self.form}_vnni", self.output_dtype, self.out_features, self.in_features)



def dense_linear(weight: Tensor, bias: Tensor | None, device: torch.device,
                 output_dtype: torch.dtype | None = None) -> DenseLinear:
    weight = weight.to(device).contiguous()
    # oneDNN's bf16 reorder needs AVX-512 BW/VL/DQ (or AVX-NE-CONVERT): below the avx512 level it raises at load.
    is_prepacked = (weight.dtype == torch.bfloat16 and device.type == "cpu" and torch.backends.mkldnn.is_available()
                    and cpu_isa.at_least("avx512"))
    return DenseLinear(weight, bias, is_prepacked, output_dtype)


def int8_linear(weight: Tensor, bias: Tensor | None, dtype: torch.dtype) -> Int8Linear:
    """Quantize a float weight [out, in] (on its device) to int8; activations run in `dtype`."""
    qweight, scales = quantize_int8(weight, dtype)
    return Int8Linear(qweight, scales, bias)


def int4_linear(weight: Tensor, bias: Tensor | None, dtype: torch.dtype, group_size: int) -> Int4Linear:
    """Quantize a float weight [out, in] (on its device) to group-wise int4; activations run in `dtype`."""
    q, scale, zero = quantize_int4_values(weight, group_size)
    return int4_from_values(q, scale, zero, group_size, bias, dtype)


def int4_from_values(q: Tensor, scale: Tensor, zero: Tensor, group_size: int, bias: Tensor | None,
                     dtype: torch.dtype) -> Int4Linear:
    """An Int4Linear from already-quantized values: q [out, in] in 0..15, w = (q - 8) * scale + zero."""
    packed, scales_and_zeros = pack_int4(q, scale, zero, dtype)
    out_features, in_features = q.shape
    return Int4Linear(packed, scales_and_zeros, group_size, out_features, in_features, bias)
