"""Weight-only quantized linear layers: thin wrappers over aten's packed int8 and int4 matmuls.

Chosen by measurement on this project's CPU (docs/weights-and-kernels.md): torchao 0.18's int4 config needs a
CUDA-only kernel package and its int8 config ran slower than bf16, while the aten kernels beneath it
(`_weight_int8pack_mm`, `_weight_int4pack_mm_for_cpu`, `_weight_int4pack_mm` on CUDA) read 2-4x fewer
weight bytes and compute every row the same way whatever the row count.

Formats (what each apply_* function takes):
- int8: qweight [out, in] int8, scales [out] in the activation dtype; w = q * scale (symmetric, per channel).
- int4: packed (aten's layout for the device), scales_and_zeros [in / group_size, out, 2] in the activation
  dtype; w = (q - 8) * scale + zero with q in 0..15 (asymmetric, per group of group_size inputs). GGUF's
  Q4_1 (w = d q + m) is scale = d, zero = m + 8 d; its Q4_0 (w = d (q - 8)) is zero = 0.
"""

from __future__ import annotations

import torch
from torch import Tensor

# The int4 kernels take 4-bit values two per byte; the inner tiling factor is aten's, fixed at 2 on CUDA.
_CUDA_INNER_K_TILES = 2


# The aten kernels each mode calls, per device type (a CPU-only build registers no CUDA kernels).
_KERNELS = {
    ("int8", "cpu"): ("_weight_int8pack_mm",),
    ("int8", "cuda"): ("_weight_int8pack_mm",),
    ("int4", "cpu"): ("_convert_weight_to_int4pack_for_cpu", "_weight_int4pack_mm_for_cpu"),
    ("int4", "cuda"): ("_convert_weight_to_int4pack", "_weight_int4pack_mm"),
}


def unsupported_reason(mode: str, device: torch.device, dtype: torch.dtype) -> str | None:
    """None when `mode` ("int8" or "int4") can run on `device` with `dtype` activations, else why not: the
    aten kernels it needs are not in this torch build for that device, or (int4 on CUDA) the activations
    are not bfloat16, the only dtype that kernel takes."""
    ops = _KERNELS.get((mode, device.type))
    if ops is None:
        return f"{mode} weights have no kernel on {device.type}"
    missing = [op for op in ops if not torch._C._dispatch_has_kernel_for_dispatch_key(f"aten::{op}", device.type.upper())]
    if missing:
        return f"this torch ({torch.__version__}) has no {device.type} kernel for aten.{', aten.'.join(missing)}"
    if mode == "int4" and device.type == "cuda" and dtype != torch.bfloat16:
        return f"aten._weight_int4pack_mm on CUDA takes bfloat16 activations, not {dtype}"
    return None


def quantize_int8(weight: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """weight [out, in] -> (qweight int8 [out, in], scales [out] in `dtype`), symmetric per output channel.

    Scales are rounded to `dtype` before quantizing, so q * scale is the nearest grid point the kernel
    can represent."""
    w = weight.float()
    scales = (w.abs().amax(dim=1) / 127).clamp(min=torch.finfo(torch.float32).tiny).to(dtype)
    qweight = torch.round(w / scales.float()[:, None]).clamp(-127, 127).to(torch.int8)
    return qweight.contiguous(), scales.contiguous()


def dequantize_int8(qweight: Tensor, scales: Tensor) -> Tensor:
    """The float32 weights the int8 kernel multiplies by: [out, in]."""
    return qweight.float() * scales.float()[:, None]


def apply_int8_linear(x: Tensor, qweight: Tensor, scales: Tensor) -> Tensor:
    """x [rows, in] -> [rows, out] in x's dtype; accumulates in float32."""
    return torch.ops.aten._weight_int8pack_mm(x, qweight, scales)


def quantize_int4_values(weight: Tensor, group_size: int) -> tuple[Tensor, Tensor, Tensor]:
    """weight [out, in] -> (q int32 [out, in] in 0..15, scale, zero [out, in / group_size] float32).

    Asymmetric min/max per group, as GGUF's Q4_1."""
    out_features, in_features = weight.shape
    if in_features % group_size:
        raise ValueError(f"in_features ({in_features}) must be a multiple of group_size ({group_size})")
    groups = weight.float().view(out_features, in_features // group_size, group_size)
    low, high = groups.amin(dim=-1), groups.amax(dim=-1)
    scale = ((high - low) / 15).clamp(min=torch.finfo(torch.float32).tiny)
    q = torch.round((groups - low[..., None]) / scale[..., None]).clamp(0, 15).to(torch.int32)
    return q.view(out_features, in_features), scale, low + 8 * scale


def pack_int4(q: Tensor, scale: Tensor, zero: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """q int [out, in] in 0..15, scale/zero [out, in / group] -> (packed, scales_and_zeros) on q's device.

    scales_and_zeros is rounded to `dtype` (the activation dtype the kernels require): the only rounding
    a GGUF Q4 tensor takes on its way in."""
    scales_and_zeros = torch.stack([scale, zero], dim=-1).transpose(0, 1).contiguous().to(dtype)
    q = q.to(torch.int32)
    if q.device.type == "cuda":
        nibbles = (q[:, ::2] << 4 | q[:, 1::2]).to(torch.uint8)
        packed = torch.ops.aten._convert_weight_to_int4pack(nibbles, _CUDA_INNER_K_TILES)
    else:
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 1)
    return packed, scales_and_zeros


def dequantize_int4(q: Tensor, scales_and_zeros: Tensor, group_size: int) -> Tensor:
    """The float32 weights the int4 kernel multiplies by: [out, in], from q [out, in] in 0..15."""
    out_features, in_features = q.shape
    sz = scales_and_zeros.float().transpose(0, 1)  # [out, in / group, 2]
    groups = (q.float().view(out_features, -1, group_size) - 8) * sz[..., :1] + sz[..., 1:]
    return groups.view(out_features, in_features)


def apply_int4_linear(x: Tensor, packed: Tensor, group_size: int, scales_and_zeros: Tensor) -> Tensor:
    """x [rows, in] -> [rows, out] in x's dtype; accumulates in float32."""
    if x.device.type == "cuda":
        return torch.ops.aten._weight_int4pack_mm(x, packed, group_size, scales_and_zeros)
    return torch.ops.aten._weight_int4pack_mm_for_cpu(x, packed, group_size, scales_and_zeros)
