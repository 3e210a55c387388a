"""Linear layers of the native forward: dense (bf16 prepacked for oneDNN, or plain), int8 or int4 weights.

Each layer is called in two ways:
- `matmul_in_chunk(x, ...)`: one kernel call over a prefill chunk's rows, computed as they are within
  their whole chunk (engine.model.attention): a kernel whose rows depend on the row count gets the
  chunk's other rows as zeros, so a row's result does not depend on where its prompt was cut.
- `rows_invariant(x)`: every row's result is the same whatever the row count, by calling the kernel only
  with row counts its RowTiling (engine.model.row_tiling) measured to agree. Decode rows and the rows
  sampled from use it, so a sequence's tokens do not depend on what else is batched.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from engine.model.row_tiling import RowTiling, RowTilingStore, calibrate_row_tiling
from kernels import vnni_linear
from kernels.weight_only import (
    apply_int4_linear,
    apply_int8_linear,
    pack_int4,
    quantize_int4_values,
    quantize_int8,
    unsupported_reason,
)

logger = logging.getLogger(__name__)

# Before calibration: one call over all rows.
_UNTILED = RowTiling()


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

    def __init__(self, weight: Tensor, bias: Tensor | None, is_prepacked: bool) -> None:
        self.out_features, self.in_features = weight.shape
        self.dtype = weight.dtype
        self.is_prepacked = is_prepacked
        self.device = weight.device
        self.weight = torch.ops.mkldnn._reorder_linear_weight(weight, 8) if is_prepacked else weight
        self.bias = bias
        self._num_bytes = weight.numel() * weight.element_size()

    def _kernel(self, x: Tensor) -> Tensor:
        if self.is_prepacked:
            return torch.ops.mkldnn._linear_pointwise(x, self.weight, None, "none", [], "")
        return F.linear(x, self.weight)

    @property
    def num_bytes(self) -> int:
        return self._num_bytes

    @property
    def kernel_key(self) -> tuple:
        return ("dense", self.dtype, self.is_prepacked, self.out_features, self.in_features)



class Int8Linear(Linear):
    """Symmetric per-output-channel int8 weights (aten._weight_int8pack_mm)."""

    has_per_row_cpu_kernel = True

    def __init__(self, qweight: Tensor, scales: Tensor, bias: Tensor | None) -> None:
        self.out_features, self.in_features = qweight.shape
        self.qweight, self.scales, self.bias = qweight, scales, bias
        self.device = qweight.device

    def _kernel(self, x: Tensor) -> Tensor:
        return apply_int8_linear(x, self.qweight, self.scales)

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



class BlockQuantizedLinear(Linear):
    """GGUF-style block-quantized weights on an x86 CPU with AVX512-VNNI (kernels.vnni_linear): Q4_1 (w = d q
    + m per block of 32) or Q8_0 (w = d q). bf16 activations are quantized to 16 bits per block of 32 and
    each block's dot product is an exact integer. output_dtype float32 hands the float32 accumulator on
    unrounded (to the float32 residual stream, or as logits)."""

    has_per_row_cpu_kernel = True

    def __init__(self, form: str, packed: Tensor, out_features: int, in_features: int, bias: Tensor | None,
                 output_dtype: torch.dtype = torch.bfloat16) -> None:
        if form not in ("q4", "q8"):
            raise ValueError(f"form must be 'q4' or 'q8', got {form!r}")
        self.form, self.out_features, self.in_features = form, out_features, in_features
        self.packed, self.bias, self.output_dtype = packed, bias, output_dtype
        self.device = packed.device

    def _kernel(self, x: Tensor) -> Tensor:
        apply = vnni_linear.apply_q4_linear if self.form == "q4" else vnni_linear.apply_q8_linear
        return apply(x, self.packed, self.output_dtype)

    @property
    def num_bytes(self) -> int:
        return self.packed.numel()

    @property
    def kernel_key(self) -> tuple:
        return (f"{self.form}_vnni", self.output_dtype, self.out_features, self.in_features)



def dense_linear(weight: Tensor, bias: Tensor | None, device: torch.device) -> DenseLinear:
    weight = weight.to(device).contiguous()
    is_prepacked = (weight.dtype == torch.bfloat16 and device.type == "cpu" and torch.backends.mkldnn.is_available())
    return DenseLinear(weight, bias, is_prepacked)


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


@dataclass(frozen=True)
class QuantizedValues:
    """A weight already in 4-bit form (from a GGUF Q4_0/Q4_1 tensor): w = (q - 8) * scale + zero.

    q [out, in] uint8 in 0..15; scale, zero [out, in / group_size] float32."""

    q: Tensor
    scale: Tensor
    zero: Tensor
    group_size: int


class Q8Embedding:
    """Token embeddings read from a packed Q8_0 weight (the tied head's own): float32 rows, w = d q exactly."""

    def __init__(self, packed: Tensor, shares_head: bool) -> None:
        self.packed, self.shares_head = packed, shares_head

    def lookup(self, token_ids: Tensor) -> Tensor:
        """token_ids [T] -> [T, hidden_size] float32."""
        return vnni_linear.q8_rows(self.packed, token_ids)

    @property
    def num_bytes(self) -> int:
        return self.packed.numel()


class Embedding:
    """Token embeddings, dense in the model dtype, or the int8 table the tied lm_head also reads."""

    def __init__(self, table: Tensor, scales: Tensor | None, dtype: torch.dtype, shares_head: bool) -> None:
        self.table, self.scales, self.dtype, self.shares_head = table, scales, dtype, shares_head

    def lookup(self, token_ids: Tensor) -> Tensor:
        """token_ids [T] -> [T, hidden_size] in the model dtype."""
        rows = self.table.index_select(0, token_ids)
        if self.scales is None:
            return rows
        return (rows.float() * self.scales.index_select(0, token_ids).float()[:, None]).to(self.dtype)

    @property
    def num_bytes(self) -> int:
        size = self.table.numel() * self.table.element_size()
        return size + (0 if self.scales is None else self.scales.numel() * self.scales.element_size())


def is_int4_packable(out_features: int, in_features: int, group_size: int) -> bool:
    """aten's int4 packing takes rows in tiles of 16 and inputs in whole groups."""
    return out_features % 16 == 0 and in_features % group_size == 0


def residual_dtype(mode: str, dtype: torch.dtype) -> torch.dtype:
    """The residual stream's dtype: the activation dtype without quantization, as transformers keeps it (bf16
    stays exact against it); float32 with quantized weights, as llama.cpp keeps it, which brings a 4-bit
    model's logits closer to its GGUF's own (README, 'Weights')."""
    return dtype if mode == "none" else torch.float32


def vnni_unavailable_reason(device: torch.device, dtype: torch.dtype) -> str | None:
    """None when quantized layers run on kernels.vnni_linear here, else why they run on aten's kernels."""
    if torch.device(device).type != "cpu":
        return f"it runs on CPUs, not {torch.device(device).type}"
    if dtype != torch.bfloat16:
        return f"it takes bfloat16 activations, not {dtype}"
    return vnni_linear.unavailable_reason()


class LinearFactory:
    """Builds each layer in the model's quantization mode; activations run in `dtype`.

    int4 layers and the 8-bit vocabulary head run on kernels.vnni_linear where it can (a CPU with
    AVX512-VNNI, bf16 activations), otherwise on aten's int4 and int8 kernels (bf16 or float32 activations)."""

    def __init__(self, quantization, dtype: torch.dtype, device: torch.device) -> None:
        self.mode, self.group_size = quantization.mode, quantization.group_size
        self.dtype, self.device = dtype, device
        self.residual_dtype = residual_dtype(self.mode, dtype)
        self.vnni_reason = (vnni_unavailable_reason(device, dtype) if self.mode != "none"
                            else "weights are not quantized")
        if self.mode != "none" and self.vnni_reason is not None:
            logger.info("quantized layers run on aten's kernels: kernels.vnni_linear does not run here (%s)",
                        self.vnni_reason)
        # Refused before any weight is read: quantized modes also pack the head and odd layers as int8.
        for mode in (("int8", "int4") if self.mode == "int4" else (self.mode,) if self.mode != "none" else ()):
            reason = unsupported_reason(mode, torch.device(device), dtype)
            if reason is not None:
                raise ValueError(f"quantization={self.mode} cannot run here: {reason}; use quantization none")

    def linear(self, weight: Tensor, bias: Tensor | None, adds_to_residual: bool = False) -> Linear:
        """weight [out, in] as stored (any float dtype): quantized from its own values, not a bf16 copy."""
        weight = weight.to(self.device)
        if self.mode == "int4" and is_int4_packable(*weight.shape, self.group_size):
            return self._int4(*quantize_int4_values(weight, self.group_size), bias, adds_to_residual=adds_to_residual)
        if self.mode != "none":  # int4 packs only whole 16-row tiles of whole groups: int8 for the rest
            return int8_linear(weight, bias, self.dtype)
        return dense_linear(weight.to(self.dtype), bias, self.device)

    def from_q4(self, parts: list[QuantizedValues], bias: Tensor | None, adds_to_residual: bool = False) -> Linear:
        """Fused rows of already-4-bit weights (q/k/v or gate/up), packed as they are. A layer whose output
        `adds_to_residual` (o, down) hands it on in the residual dtype where its kernel can."""
        q = torch.cat([p.q for p in parts]).to(self.device)
        scale = torch.cat([p.scale for p in parts]).to(self.device)
        zero = torch.cat([p.zero for p in parts]).to(self.device)
        return self._int4(q, scale, zero, bias, parts[0].group_size, adds_to_residual)

    def _int4(self, q: Tensor, scale: Tensor, zero: Tensor, bias: Tensor | None, group_size: int | None = None,
              adds_to_residual: bool = False) -> Linear:
        """w = (q - 8) * scale + zero: on kernels.vnni_linear when it runs here and the values fit its float16
        block values (w = scale q + minimum), else on aten's int4 kernel."""
        group_size = group_size or self.group_size
        if self.vnni_reason is None and group_size == vnni_linear.GROUP_SIZE:
            # Exact for a GGUF Q4_1 tensor: zero = m + 8 d was exact, so zero - 8 d is m.
            minimum = zero - 8 * scale
            if vnni_linear.unpackable_reason(*q.shape, scale, minimum) is None:
                output_dtype = self.residual_dtype if adds_to_residual else self.dtype
                return BlockQuantizedLinear("q4", vnni_linear.pack_q4(q, scale, minimum), *q.shape, bias, output_dtype)
        return int4_from_values(q, scale, zero, group_size, bias, self.dtype)

    def embedding_and_head(self, embed: Tensor, lm_head: Tensor | None) -> tuple[Embedding, Linear]:
        """The embedding and the lm_head (the embedding itself when lm_head is None: tied).

        Quantized modes keep the vocabulary projection in 8 bits, as GGUF files commonly keep
        token_embd/output in Q8_0 (the default model's does): Q8_0 blocks on kernels.vnni_linear where it runs
        (a Q8_0 table's own values, given back exactly from its float32 dequantization; float32 logits),
        else int8 per channel. A tied table serves both the lookup and the head, so it is stored once."""
        embed = embed.to(self.device)
        vocab_weight = embed if lm_head is None else lm_head.to(self.device)
        if self.mode != "none" and self.vnni_reason is None:
            q, d = vnni_linear.quantize_q8(vocab_weight)
            if vnni_linear.unpackable_reason(*q.shape, d) is None:
                packed = vnni_linear.pack_q8(q, d)
                head = BlockQuantizedLinear("q8", packed, *q.shape, None, torch.float32)
                if lm_head is None:
                    return Q8Embedding(packed, shares_head=True), head
                return Embedding(embed.to(self.dtype).contiguous(), None, self.dtype, shares_head=False), head
        if self.mode != "none" and lm_head is None:
            qweight, scales = quantize_int8(embed, self.dtype)
            return Embedding(qweight, scales, self.dtype, shares_head=True), Int8Linear(qweight, scales, None)
        table = embed.to(self.dtype).contiguous()
        if lm_head is None:
            head = dense_linear(table, None, self.device)
            # A prepacked head is a reordered copy: the lookup table is then a second tensor.
            return Embedding(table, None, self.dtype, shares_head=not head.is_prepacked), head
        head = (int8_linear(lm_head.to(self.device), None, self.dtype) if self.mode != "none"
                else dense_linear(lm_head.to(self.dtype), None, self.device))
        return Embedding(table, None, self.dtype, shares_head=False), head
