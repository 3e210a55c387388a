"""A Llama layer's per-row work around attention, for block-quantized or bf16 weights on hearth.kernels.model.vnni_linear
and a float32 residual stream (csrc/fused_layer.c, built into one library with csrc/vnni_linear.c).

Why: at one decode row a layer was ~25 small torch ops and 4 kernel calls, each with its own dispatch,
allocation and (for the kernels) OpenMP start, about half a decode step's time on this CPU. Two calls do the
same work, with the torch path's roundings; its norm and silu * up are computed by apply_rms_norm and
apply_silu_mul below in both (torch's own sum of squares and exp would differ in the last bits):

    apply_layer_front: x = norm(hidden); q, k, v = split(qkv(x)); q and k rotated
    apply_layer_back:  hidden += o(attn); x = norm(hidden); hidden += down(silu(gate(x)) * up(x))

Weights are given as (form, packed) with form "q4", "q5", "q8", "q8k" or "b16" and packed as hearth.kernels.model.vnni_linear packs
them.

apply_decode_layers runs a step's whole layer stack in one call (csrc/decode_layers.c): per layer the front,
the cache write, hearth.kernels.model.row_attention and the back, the same functions in the same order as the per-layer
calls, without their Python dispatch (~3 ms of a ~10 ms one-row step). Named for decode steps, it takes any
step whose rows the row kernel attends all: with bf16/int8/int4 weights there, prefill rows too.
"""

from __future__ import annotations

import ctypes
import functools

import torch
from torch import Tensor

from hearth.kernels import cpu_isa
from hearth.kernels.model import row_attention, vnni_linear

FORMS = {"q4": 4, "q5": 5, "q8": 8, "q8k": 9, "b16": 16}


def _library() -> ctypes.CDLL:
    """vnni_linear's library of the current CPU level, with this module's functions declared."""
    return _declared(cpu_isa.level())


@functools.lru_cache(maxsize=None)
def _declared(level: str) -> ctypes.CDLL:
    library, reason = vnni_linear._library_at(level)
    if library is None:
        raise RuntimeError(f"hearth.kernels.model.fused_layer cannot run here: {reason}")
    pointer, integer, number = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float
    library.layer_front.argtypes = [pointer, integer, integer, pointer, number, ctypes.c_int, pointer, integer, integer,
                                    integer, pointer, pointer, pointer, pointer, pointer, ctypes.c_int]
    library.layer_back.argtypes = [pointer, integer, integer, pointer, integer, ctypes.c_int, pointer, pointer, number,
                                   ctypes.c_int, pointer, integer, ctypes.c_int, pointer, ctypes.c_int]
    library.layer_front.restype = library.layer_back.restype = ctypes.c_int
    library.decode_layers.argtypes = ([pointer, integer, integer, integer, pointer, pointer, number, integer, integer,
                                       integer, integer, pointer, pointer, pointer, integer, pointer, pointer, pointer,
                                       pointer, integer, number, pointer, pointer, ctypes.c_int])
    library.decode_layers.restype = ctypes.c_int
    library.rms_norm_bf16.argtypes = [pointer, integer, integer, pointer, number, pointer, ctypes.c_int]
    library.silu_mul_bf16.argtypes = [pointer, integer, integer, pointer, ctypes.c_int]
    library.rms_norm_bf16.restype = library.silu_mul_bf16.restype = None
    return library


def unavailable_reason() -> str | None:
    return vnni_linear.unavailable_reason()


def _check(name: str, tensor: Tensor, dtype: torch.dtype, shape: tuple[int, ...]) -> None:
    if tensor.dtype != dtype or tuple(tensor.shape) != shape or not tensor.is_contiguous() or tensor.device.type != "cpu":
        raise ValueError(f"{name} must be a contiguous CPU {dtype} tensor of shape {shape}, got {tensor.dtype} "
                         f"{tuple(tensor.shape)}")


def apply_layer_front(hidden: Tensor, norm_weight: Tensor, eps: float, qkv: tuple[str, Tensor], num_heads: int,
                      num_kv_heads: int, head_dim: int, cos: Tensor, signed_sin: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """hidden [rows, dim] float32; norm_weight [dim] bf16; cos, signed_sin [rows, head_dim] bf16 -> q [rows,
    num_heads, head_dim], k and v [rows, num_kv_heads, head_dim] bf16 (q and k rotated)."""
    rows, dim = hidden.shape
    form, packed = qkv
    _check("hidden", hidden, torch.float32, (rows, dim))
    _check("norm_weight", norm_weight, torch.bfloat16, (dim,))
    _check("cos", cos, torch.bfloat16, (rows, head_dim))
    _check("signed_sin", signed_sin, torch.bfloat16, (rows, head_dim))
    q = torch.empty(rows, num_heads, head_dim, dtype=torch.bfloat16)
    k = torch.empty(rows, num_kv_heads, head_dim, dtype=torch.bfloat16)
    v = torch.empty(rows, num_kv_heads, head_dim, dtype=torch.bfloat16)
    if rows and _library().layer_front(hidden.data_ptr(), rows, dim, norm_weight.data_ptr(), eps, FORMS[form],
                                       packed.data_ptr(), num_heads, num_kv_heads, head_dim, cos.data_ptr(),
                                       signed_sin.data_ptr(), q.data_ptr(), k.data_ptr(), v.data_ptr(),
                                       torch.get_num_threads()):
        raise MemoryError(f"layer_front could not allocate scratch for {rows} rows")
    return q, k, v


def apply_layer_back(hidden: Tensor, attn: Tensor, o: tuple[str, Tensor], norm_weight: Tensor, eps: float,
                     gate_up: tuple[str, Tensor], down: tuple[str, Tensor], intermediate: int) -> None:
    """hidden [rows, dim] float32, updated in place; attn [rows, attn_dim] bf16; norm_weight [dim] bf16."""
    rows, dim = hidden.shape
    _check("hidden", hidden, torch.float32, (rows, dim))
    _check("attn", attn, torch.bfloat16, (rows, attn.shape[1]))
    _check("norm_weight", norm_weight, torch.bfloat16, (dim,))
    if rows and _library().layer_back(hidden.data_ptr(), rows, dim, attn.data_ptr(), attn.shape[1], FORMS[o[0]],
                                      o[1].data_ptr(), norm_weight.data_ptr(), eps, FORMS[gate_up[0]],
                                      gate_up[1].data_ptr(), intermediate, FORMS[down[0]], down[1].data_ptr(),
                                      torch.get_num_threads()):
        raise MemoryError(f"layer_back could not allocate scratch for {rows} rows")


def apply_rms_norm(hidden: Tensor, weight: Tensor, eps: float) -> Tensor:
    """hidden [rows, dim] float32, weight [dim] bf16 -> bf16(bf16(h rsqrt(mean(h^2) + eps)) weight) [rows, dim]."""
    rows, dim = hidden.shape
    hidden = hidden.contiguous()
    _check("hidden", hidden, torch.float32, (rows, dim))
    _check("weight", weight, torch.bfloat16, (dim,))
    out = torch.empty(rows, dim, dtype=torch.bfloat16)
    if rows:
        _library().rms_norm_bf16(hidden.data_ptr(), rows, dim, weight.data_ptr(), eps, out.data_ptr(),
                                 torch.get_num_threads())
    return out


def apply_silu_mul(gate_up: Tensor) -> Tensor:
    """gate_up [rows, 2 intermediate] bf16 (gate first) -> bf16(bf16(silu(gate)) up) [rows, intermediate]."""
    rows, width = gate_up.shape
    gate_up = gate_up.contiguous()
    _check("gate_up", gate_up, torch.bfloat16, (rows, width))
    out = torch.empty(rows, width // 2, dtype=torch.bfloat16)
    if rows:
        _library().silu_mul_bf16(gate_up.data_ptr(), rows, width // 2, out.data_ptr(), torch.get_num_threads())
    return out


# Per layer, the order decode_layers.c reads: pointers input_norm, qkv, o, post_norm, gate_up, down; forms of
# qkv, o, gate_up and down.
_LAYER_TENSORS = ("input_norm", "qkv", "o", "post_norm", "gate_up", "down")


class LayerStack:
    """A model's layers as decode_layers.c takes them: arrays of their weights' addresses and forms, built
    once. Holds the tensors, so the addresses stay valid while it lives."""

    def __init__(self, layers: list[dict[str, Tensor | tuple[str, Tensor]]]) -> None:
        """layers: per layer, input_norm and post_norm [dim] bf16, and (form, packed) for qkv, o, gate_up and
        down, each of its own form (a mixed model's q4 gate_up may feed a q8 down)."""
        self.tensors: list[Tensor] = []
        forms: list[int] = []
        for layer in layers:
            for name in _LAYER_TENSORS:
                item = layer[name]
                self.tensors.append(item[1] if isinstance(item, tuple) else item)
            forms += [FORMS[layer[name][0]] for name in ("qkv", "o", "gate_up", "down")]
        for tensor in self.tensors:
            if not tensor.is_contiguous() or tensor.device.type != "cpu":
                raise ValueError("layer tensors must be contiguous CPU tensors")
        self.num_layers = len(layers)
        self.pointers = (ctypes.c_void_p * len(self.tensors))(*(t.data_ptr() for t in self.tensors))
        self.forms = (ctypes.c_int32 * len(forms))(*forms)


def apply_decode_layers(hidden: Tensor, stack: LayerStack, eps: float, num_heads: int, head_dim: int,
                        intermediate: int, cos: Tensor, signed_sin: Tensor, kv: Tensor, slot_mapping: Tensor,
                        tables: Tensor, table_starts: Tensor, positions: Tensor, block_size: int, scale: float) -> None:
    """hidden [rows, dim] float32, updated in place through every layer; kv [num_layers, slots, 2, num_kv_heads,
    head_dim] bf16, each row's key and value written at slot_mapping [rows] int64 of every layer; row r
    attends to positions 0..positions[r] through tables[table_starts[r]:] (hearth.kernels.model.row_attention)."""
    rows, dim = hidden.shape
    num_layers, num_slots, _, num_kv_heads, _ = kv.shape
    _check("hidden", hidden, torch.float32, (rows, dim))
    _check("cos", cos, torch.bfloat16, (rows, head_dim))
    _check("signed_sin", signed_sin, torch.bfloat16, (rows, head_dim))
    _check("kv", kv, torch.bfloat16, (stack.num_layers, num_slots, 2, num_kv_heads, head_dim))
    for name, tensor, dtype in (("slot_mapping", slot_mapping, torch.int64), ("table_starts", table_starts, torch.int64),
                                ("positions", positions, torch.int64)):
        _check(name, tensor, dtype, (rows,))
    if tables.dtype != torch.int32 or not tables.is_contiguous():
        raise ValueError(f"tables must be a contiguous int32 tensor, got {tables.dtype}")
    if rows and _library().decode_layers(
            hidden.data_ptr(), rows, dim, num_layers, stack.pointers, stack.forms, eps, num_heads, num_kv_heads,
            head_dim, intermediate, cos.data_ptr(), signed_sin.data_ptr(), kv.data_ptr(), num_slots,
            slot_mapping.data_ptr(), tables.data_ptr(), table_starts.data_ptr(), positions.data_ptr(), block_size,
            scale, row_attention.function_pointer(), row_attention.function_pointer("write_kv"),
            torch.get_num_threads()):
        raise MemoryError(f"decode_layers failed for {rows} rows (out of memory, or a shape row_attention does "
                          "not take)")
