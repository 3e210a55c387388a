"""Causal attention of each query row over its own context in the paged KV cache, on x86 CPUs with
AVX2 and above (csrc/row_attention.c, on csrc/simd.h's primitives).

Why hand-written: a token's attention output must not depend on how its rows were batched or cut, so that
keys and values computed by a decode step equal those a prefill of the same tokens computes (a chat's
previous answer can then be served from the prefix cache) and a cache hit may start anywhere. torch's SDPA
computes a lone query row with another kernel than a row among others (its results differ in ~10% of
rows here), and its rows depend on the number of keys it is given, so the engine had to reproduce each
prefill chunk's geometry. This kernel computes a row at position p from its query and keys 0..p alone:
blocks of 64 keys from position 0, online softmax in float32, in that order on one thread. It reads the
cache through the block tables, so nothing is gathered first.

Where the CPU has AMX-BF16 (this one), head_dim is a multiple of 64 and the block size of 16, the cache is
kept in the tiles' layout within each block (is_tiled_layout; every writer goes through apply_write_kv):
keys as dimension pairs by slots, values as slot pairs by dimensions. Scores and weighted values are then
tile dot products over operands read in place; a sequence's consecutive rows (a prefill chunk's) share a
tile, up to 16 / group rows, and each tile row's products depend on its own operands alone, so sharing
changes no bits. The softmax weights are rounded to bf16 for the values' products (as transformers' eager
attention rounds them to the model dtype). A task walks one sequence's keys once for up to 8 tiles. Other
shapes take the vector path on a plain [slot, 2, head, dim] cache.

An earlier version built the tiles' operands from a plain cache; that had been ~70% of a decode row's time.
In the engine (int4, alternated, 17:40 UTC) reading them in place took decode steps of 32 sequences at 800
tokens from 74-75 to 56 ms and of 8 at 1,500 tokens from 40-41 to 30-31 ms. In one call (this CPU, 2
threads, per layer, with built operands), 8 sequences x 85 rows over ~1,100 keys took 3.1 ms against 12.7
on the vector path, a cold 1,000-token prompt 2.1 against 8.6.
"""

from __future__ import annotations

import ctypes
import functools

import torch
from torch import Tensor

from hearth.kernels import cpu_isa
from hearth.kernels.model.c_library import CSRC, load_at

SOURCE = CSRC / "row_attention.c"
# One library per CPU level (hearth.kernels.cpu_isa; csrc/simd.h). At amx, the AMX-BF16 path is built where
# the compiler knows its intrinsics; a process uses one path for every row, so decode and prefill rows agree
# within it.
MAX_GROUP = 16
MAX_HEAD_DIM = 256


def _library() -> tuple[ctypes.CDLL | None, str | None]:
    """(the library of the current CPU level, None) or (None, why it cannot run here)."""
    return _library_at(cpu_isa.level())


@functools.lru_cache(maxsize=None)
def _library_at(level: str) -> tuple[ctypes.CDLL | None, str | None]:
    library, reason = load_at([SOURCE], level)
    if library is None:
        return None, reason
    library.set_amx.argtypes = [ctypes.c_int]
    library.set_amx.restype = ctypes.c_int
    library.set_amx(level == "amx")
    library.kv_is_tiled.argtypes = [ctypes.c_int64, ctypes.c_int64]
    library.kv_is_tiled.restype = ctypes.c_int
    library.write_kv.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_int64] * 4
    library.write_kv.restype = None
    library.row_attention.argtypes = [ctypes.c_void_p] * 5 + [ctypes.c_int64] * 5 + [ctypes.c_float, ctypes.c_void_p,
                                                                                     ctypes.c_int]
    library.row_attention.restype = ctypes.c_int
    return library, None


def _has_amx() -> bool:
    return cpu_isa.at_least("amx")


def use_amx(is_wanted: bool) -> bool:
    """Turns the AMX path on or off (on by default where it runs: is_tiled_layout); returns whether it is on.
    For tests and benchmarks: switching it changes the numerics and the cache layout, so a cache written
    before reads wrong after."""
    library, reason = _library()
    if library is None:
        raise RuntimeError(f"hearth.kernels.model.row_attention cannot run here: {reason}")
    return bool(library.set_amx(is_wanted and _has_amx()))


def unavailable_reason(num_heads: int, num_kv_heads: int, head_dim: int, dtype: torch.dtype,
                       device: torch.device) -> str | None:
    """None when the kernel runs here for this attention shape, else why not."""
    if device.type != "cpu" or dtype != torch.bfloat16:
        return f"it takes bfloat16 on CPU, not {dtype} on {device}"
    if head_dim % 32 or head_dim > MAX_HEAD_DIM:
        return f"head_dim {head_dim} is not a multiple of 32 up to {MAX_HEAD_DIM}"
    if num_heads % num_kv_heads or num_heads // num_kv_heads > MAX_GROUP:
        return f"{num_heads} query heads over {num_kv_heads} KV heads is not a group of at most {MAX_GROUP}"
    return _library()[1]


def function_pointer(name: str = "row_attention") -> ctypes.c_void_p:
    """The C function row_attention or write_kv of the current level's library, for C callers in other libraries
    (csrc/decode_layers.c)."""
    return _function_pointer(name, cpu_isa.level())


@functools.lru_cache(maxsize=None)
def _function_pointer(name: str, level: str) -> ctypes.c_void_p:
    library, reason = _library_at(level)
    if library is None:
        raise RuntimeError(f"hearth.kernels.model.row_attention cannot run here: {reason}")
    return ctypes.cast(getattr(library, name), ctypes.c_void_p)


def is_tiled_layout(head_dim: int, block_size: int) -> bool:
    """Whether apply_write_kv keeps a cache of this head_dim and block size in the kernel's tiled layout (where
    the AMX path reads it in place) rather than as [slot, 2, kv head, dim]."""
    library, _ = _library()
    return library is not None and bool(library.kv_is_tiled(head_dim, block_size))


def apply_write_kv(kv_layer: Tensor, k: Tensor, v: Tensor, slot_mapping: Tensor, block_size: int) -> None:
    """k, v [rows, num_kv_heads, head_dim] bf16 into kv_layer [num_slots, 2, num_kv_heads, head_dim] at
    slot_mapping [rows] int64, laid out as this kernel reads it (is_tiled_layout): every writer of a cache
    the kernel attends writes through here."""
    library, reason = _library()
    if library is None:
        raise RuntimeError(f"hearth.kernels.model.row_attention cannot run here: {reason}")
    if not kv_layer.is_contiguous() or slot_mapping.dtype != torch.int64:
        raise ValueError("kv_layer must be contiguous and slot_mapping int64")
    k, v, slot_mapping = k.contiguous(), v.contiguous(), slot_mapping.contiguous()
    rows, num_kv_heads, head_dim = k.shape
    library.write_kv(kv_layer.data_ptr(), k.data_ptr(), v.data_ptr(), slot_mapping.data_ptr(), rows, num_kv_heads,
                     head_dim, block_size)


def apply_row_attention(q: Tensor, kv_layer: Tensor, tables: Tensor, table_starts: Tensor, positions: Tensor,
                        block_size: int, scale: float) -> Tensor:
    """q [rows, num_heads, head_dim] bf16; kv_layer [num_slots, 2, num_kv_heads, head_dim] bf16 (contiguous);
    tables int32 [*] (concatenated block tables); table_starts, positions int64 [rows] -> [rows, num_heads,
    head_dim] bf16."""
    library, reason = _library()
    if library is None:
        raise RuntimeError(f"hearth.kernels.model.row_attention cannot run here: {reason}")
    rows, num_heads, head_dim = q.shape
    num_kv_heads = kv_layer.shape[2]
    if not kv_layer.is_contiguous() or tables.dtype != torch.int32 or positions.dtype != torch.int64 \
            or table_starts.dtype != torch.int64:
        raise ValueError("kv_layer must be contiguous, tables int32, table_starts and positions int64")
    q = q.contiguous()
    out = torch.empty_like(q)
    if rows and library.row_attention(q.data_ptr(), kv_layer.data_ptr(), tables.data_ptr(), table_starts.data_ptr(),
                                      positions.data_ptr(), rows, num_heads, num_kv_heads, head_dim, block_size,
                                      scale, out.data_ptr(), torch.get_num_threads()):
        raise ValueError(f"row_attention does not take {num_heads} heads over {num_kv_heads} of dimension {head_dim}")
    return out
