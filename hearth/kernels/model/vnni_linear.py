"""Block-quantized weights (GGUF's Q4_1 and Q8_0 forms, Q5 and Q8K: 5-bit, and 8-bit with K-quant scales) on x86 CPUs from AVX2 up (csrc/vnni_linear.c,
on csrc/simd.h's primitives: vpdpbusd at avx512, vpmaddubsw/vpmaddwd at avx2).

Why hand-written (docs/weights-and-kernels.md): on this project's CPU aten's `_weight_int4pack_mm_for_cpu` converts
every weight to float and ran at ~26 GMAC/s warm, so its cost grew with rows (55 ms for 30 layers at 32
rows), and `_weight_int8pack_mm` (the vocabulary head) took 20 ms at 32 rows; torchao 0.18 has no x86
int4 kernel, onnxruntime's MatMulNBits (MLAS) measured no faster than aten, and `torch._int_mm` no faster
than bf16. These kernels do what llama.cpp does, with wider activations: bf16 activations are quantized to
16 bits per block of 32 inputs (x16 = round(x 32639 / max|x|), split into two signed bytes), each block's
dot product with the weights is an exact integer (`vpdpbusd`), scaled once per block in float32:

    Q4_1 (w = d q + m, q in 0..15):   y = sum over blocks of d dx dot(q, x16) + m dx sum(x16)
    Q5 (w = d q + m, q in 0..31):     the same as Q4_1
    Q8_0 (w = d q, q in -127..127):   y = sum over blocks of d dx dot(q, x16)
    Q8K (w = s_h q + m, q in -128..127, s_h per 16 inputs):
                                      y = sum over blocks of s_0 dx dot_0 + s_1 dx dot_1 + m dx sum(x16)

Q8K records hold every GGUF block form with at most 8-bit integers exactly up to its scales' float16
rounding: Q6_K (q - 32, its scales d sc per 16), Q5_K and Q4_K (q, d sc and -dmin m per 32), Q5_1 and Q4_1 (q,
d and m), Q8_0 and Q5_0 (q, d), so a fused q/k/v or gate/up group of several types keeps each member's own grid.

16-bit activations keep the result within bf16 rounding of a float32 matmul over bf16 activations
(llama.cpp's 8-bit Q8_1 activations moved the default model's logits ~2x further from its GGUF's own).
Each output is computed by one thread, blocks in order, so a row's result is the same at any row count, in
any batch. The output is bf16, or the float32 accumulator unrounded.

Packed layouts, one record per 16 outputs (a tile) and 32 inputs (a block), uint8 [n / 16, k / 32, bytes]:
- Q4 (320 bytes): nibble pairs [s, lane, j] (low nibble q[16 t + lane, 32 b + 4 s + j], high nibble the
  same at input + 16), then d [16] and m [16] float16.
- Q5 (384 bytes): q's low 4 bits as Q4's nibble pairs, then its fifth bits [lane, j] (bit s of a byte: input
  4 s + j), then d [16] and m [16] float16. GGUF's Q5_1 and Q5_K blocks go in as they are (6 bits a weight, the
  file's for Q5_1), Q5_0's as q + 16 with m = -16 d.
- Q8 (544 bytes): q + 128 [s, lane, j] (q[16 t + lane, 32 b + 4 s + j], s in 0..7), then d [16] float16.
- Q8K (608 bytes): q + 128 as Q8's, then s [half, lane] (inputs 16 half .. + 15) and m [16] float16.

The shared library is built at set-up or on first use (hearth.kernels.model.c_library) and runs on torch's OpenMP runtime with
torch's thread count.
"""

from __future__ import annotations

import ctypes
import functools

import torch
from torch import Tensor

from hearth.kernels import cpu_isa
from hearth.kernels.model.c_library import CSRC, load_at

# One library: fused_layer.c composes vnni_linear.c's kernels with a layer's per-row operations, and
# decode_layers.c composes fused_layer.c's calls into a decode step's layer stack.
SOURCES = [CSRC / "vnni_linear.c", CSRC / "bf16_linear.c", CSRC / "fused_layer.c", CSRC / "decode_layers.c"]
GROUP_SIZE = 32
TILE_OUTPUTS = 16
Q4_RECORD_BYTES = 320
Q5_RECORD_BYTES = 384
Q8_RECORD_BYTES = 544
Q8K_RECORD_BYTES = 608
B16_RECORD_BYTES = 1024
# One library per CPU level (hearth.kernels.cpu_isa), with that level's primitives (csrc/simd.h; built from
# c_library.LOWEST_LEVEL up). At amx, the AMX-INT8 path (bit-identical to the VNNI one for groups of 16 rows)
# is built where the compiler knows the instructions (gcc 11 and later); so is bf16_linear.c's AMX-BF16 path,
# which then takes every row of a bf16 weight.
_FLOAT16_MAX = torch.finfo(torch.float16).max


def _library() -> tuple[ctypes.CDLL | None, str | None]:
    """(the library of the current CPU level, None) or (None, why it cannot run here)."""
    return _library_at(cpu_isa.level())


@functools.lru_cache(maxsize=None)
def _library_at(level: str) -> tuple[ctypes.CDLL | None, str | None]:
    library, reason = load_at(SOURCES, level)
    if library is None:
        return None, reason
    for function in (library.q4_linear, library.q5_linear, library.q8_linear, library.q8k_linear, library.b16_linear):
        function.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64,
                             ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
        function.restype = ctypes.c_int
    library.set_amx.argtypes = [ctypes.c_int]
    library.set_amx.restype = ctypes.c_int
    library.set_amx(level == "amx")
    library.set_amx_bf16.argtypes = [ctypes.c_int]
    library.set_amx_bf16.restype = ctypes.c_int
    library.set_amx_bf16(level == "amx")
    return library, None


def _has_amx() -> bool:
    """The amx level (its CPU flags include AMX-INT8 and AMX-BF16: hearth.kernels.cpu_isa.REQUIRED)."""
    return cpu_isa.at_least("amx")


def unavailable_reason() -> str | None:
    """None when the kernels run on this machine's CPU, else why not."""
    return _library()[1]


def use_amx(is_wanted: bool) -> bool:
    """Turns the AMX path for groups of 16 rows on or off (on by default where it runs); returns whether it is
    on. Its results are bit-identical to the VNNI path's: this changes only speed (for benchmarks and tests)."""
    library, reason = _library()
    if library is None:
        raise RuntimeError(f"the VNNI kernels cannot run here: {reason}")
    return bool(library.set_amx(is_wanted and _has_amx()))


def use_amx_bf16(is_wanted: bool) -> bool:
    """Turns b16_linear's AMX-BF16 path on or off; returns whether it is on. Unlike use_amx, this changes the
    last bits of every bf16-weight row (the two paths round their sums differently): it is decided once when
    the library loads, and only tests switch it, to reach the vector path."""
    library, reason = _library()
    if library is None:
        raise RuntimeError(f"the VNNI kernels cannot run here: {reason}")
    return bool(library.set_amx_bf16(is_wanted and _has_amx()))


def unpackable_reason(out_features: int, in_features: int, *block_values: Tensor) -> str | None:
    """None when a weight of this shape and these per-block values (d, m) packs, else why not."""
    if out_features % TILE_OUTPUTS or in_features % GROUP_SIZE:
        return f"shape {out_features}x{in_features} is not in tiles of {TILE_OUTPUTS} outputs x {GROUP_SIZE} inputs"
    largest = max((v.abs().max().item() for v in block_values), default=0.0)
    if not largest <= _FLOAT16_MAX:  # also catches nan
        return f"block values up to {largest} do not fit float16"
    return None


def _records(values: Tensor, tiles: int, blocks: int) -> Tensor:
    """Per-block values [n, blocks] -> float16 bytes [tile, block, 32]."""
    return values.to(torch.float16).reshape(tiles, TILE_OUTPUTS, blocks).transpose(1, 2).contiguous().view(torch.uint8)


def _values(raw: Tensor) -> Tensor:
    """float16 bytes [tile, block, 32] -> float32 [n, blocks]."""
    tiles, blocks, _ = raw.shape
    return raw.contiguous().view(torch.float16).float().transpose(1, 2).reshape(tiles * TILE_OUTPUTS, blocks)


def pack_q4(q: Tensor, scale: Tensor, minimum: Tensor) -> Tensor:
    """q [n, k] in 0..15, scale and minimum [n, k / 32] (w = scale q + minimum) -> packed uint8 [n / 16, k / 32, 320].
    scale and minimum are rounded to float16 (exact for a GGUF Q4_1 tensor's own values)."""
    n, k = q.shape
    tiles, blocks = n // TILE_OUTPUTS, k // GROUP_SIZE
    values = q.to(torch.uint8).reshape(tiles, TILE_OUTPUTS, blocks, 2, 4, 4)  # [tile, lane, block, half, s, j]
    pairs = values[:, :, :, 0] | (values[:, :, :, 1] << 4)  # [tile, lane, block, s, j]
    nibbles = pairs.permute(0, 2, 3, 1, 4).reshape(tiles, blocks, 256)
    return torch.cat([nibbles, _records(scale, tiles, blocks), _records(minimum, tiles, blocks)], dim=-1).contiguous()


def unpack_q4(packed: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """packed -> (q [n, k] uint8, scale, minimum [n, k / 32] float32): what pack_q4 stored."""
    tiles, blocks, _ = packed.shape
    pairs = packed[..., :256].reshape(tiles, blocks, 4, TILE_OUTPUTS, 4).permute(0, 3, 1, 2, 4)
    q = torch.stack([pairs & 0x0F, pairs >> 4], dim=3).reshape(tiles * TILE_OUTPUTS, blocks * GROUP_SIZE)
    return q, _values(packed[..., 256:288]), _values(packed[..., 288:320])


def pack_q5(q: Tensor, scale: Tensor, minimum: Tensor) -> Tensor:
    """q [n, k] in 0..31, scale and minimum [n, k / 32] (w = scale q + minimum) -> packed uint8 [n / 16, k / 32, 384].
    scale and minimum are rounded to float16."""
    n, k = q.shape
    tiles, blocks = n // TILE_OUTPUTS, k // GROUP_SIZE
    q = q.to(torch.uint8)
    low = pack_q4(q & 0x0F, scale, minimum)
    fifth = (q >> 4).reshape(tiles, TILE_OUTPUTS, blocks, 8, 4)  # [tile, lane, block, s, j]
    plane = (fifth << torch.arange(8, dtype=torch.uint8).view(1, 1, 1, 8, 1)).sum(dim=3, dtype=torch.uint8)
    plane = plane.permute(0, 2, 1, 3).reshape(tiles, blocks, 64)
    return torch.cat([low[..., :256], plane, low[..., 256:]], dim=-1).contiguous()


def unpack_q5(packed: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """packed -> (q [n, k] uint8, scale, minimum [n, k / 32] float32): what pack_q5 stored."""
    tiles, blocks, _ = packed.shape
    low, scale, minimum = unpack_q4(torch.cat([packed[..., :256], packed[..., 320:]], dim=-1))
    plane = packed[..., 256:320].reshape(tiles, blocks, TILE_OUTPUTS, 1, 4)
    fifth = (plane >> torch.arange(8, dtype=torch.uint8).view(1, 1, 1, 8, 1)) & 1  # [tile, block, lane, s, j]
    fifth = fifth.permute(0, 2, 1, 3, 4).reshape(tiles * TILE_OUTPUTS, blocks * GROUP_SIZE)
    return low | (fifth << 4), scale, minimum


def q5_weights(packed: Tensor) -> Tensor:
    """A packed Q5 weight's values, float32 [n, k]: scale q + minimum, one product and one sum per weight."""
    q, scale, minimum = unpack_q5(packed)
    return q.float() * scale.repeat_interleave(GROUP_SIZE, 1) + minimum.repeat_interleave(GROUP_SIZE, 1)


def q5_rows(packed: Tensor, rows: Tensor) -> Tensor:
    """Output rows `rows` [T] of a packed Q5 weight, dequantized as q5_weights: [T, k] float32."""
    tiles, blocks, _ = packed.shape
    records = packed.index_select(0, rows // TILE_OUTPUTS)  # [T, blocks, 384]
    lanes = (rows % TILE_OUTPUTS).view(-1, 1, 1, 1, 1)
    pairs = records[..., :256].reshape(-1, blocks, 4, TILE_OUTPUTS, 4).gather(3, lanes.expand(-1, blocks, 4, 1, 4))
    low = torch.stack([pairs & 0x0F, pairs >> 4], dim=2).reshape(-1, blocks, 8, 4)  # [T, blocks, quad, j]
    plane = records[..., 256:320].reshape(-1, blocks, 1, TILE_OUTPUTS, 4).gather(3, lanes.expand(-1, blocks, 1, 1, 4))
    fifth = (plane.squeeze(3) >> torch.arange(8, dtype=torch.uint8).view(1, 1, 8, 1)) & 1  # [T, blocks, quad, j]
    q = (low | (fifth << 4)).reshape(-1, blocks, GROUP_SIZE).float()
    scale, minimum = (records[..., start:start + 32].contiguous().view(torch.float16)
                      .gather(2, lanes.view(-1, 1, 1).expand(-1, blocks, 1)).float() for start in (320, 352))
    return (q * scale + minimum).reshape(-1, blocks * GROUP_SIZE)


def quantize_q8(weight: Tensor) -> tuple[Tensor, Tensor]:
    """weight [n, k] -> (q int8 [n, k] in -127..127, d [n, k / 32] float32, rounded to float16), as GGUF's
    Q8_0: d = max |w| / 127 per block. Gives back a Q8_0 tensor's own values from their float32 dequantization."""
    n, k = weight.shape
    blocks = weight.float().reshape(n, k // GROUP_SIZE, GROUP_SIZE)
    d = blocks.abs().amax(dim=-1) / 127
    inverse = torch.where(d > 0, 1 / d, torch.zeros_like(d))
    q = torch.round(blocks * inverse[..., None]).clamp(-127, 127).to(torch.int8).reshape(n, k)
    return q, d.to(torch.float16).float()


def pack_q8(q: Tensor, d: Tensor) -> Tensor:
    """q [n, k] int8 in -127..127, d [n, k / 32] (w = d q) -> packed uint8 [n / 16, k / 32, 544]."""
    n, k = q.shape
    tiles, blocks = n // TILE_OUTPUTS, k // GROUP_SIZE
    biased = (q.to(torch.int16) + 128).to(torch.uint8).reshape(tiles, TILE_OUTPUTS, blocks, 8, 4)  # [tile, lane, block, s, j]
    return torch.cat([biased.permute(0, 2, 3, 1, 4).reshape(tiles, blocks, 512), _records(d, tiles, blocks)],
                     dim=-1).contiguous()


def pack_q8k(q: Tensor, scale: Tensor, minimum: Tensor | None) -> Tensor:
    """q [n, k] in -128..127, scale [n, k / 16] and minimum [n, k / 32] (None: 0), w = scale q + minimum ->
    packed uint8 [n / 16, k / 32, 608]. scale and minimum are rounded to float16."""
    n, k = q.shape
    tiles, blocks = n // TILE_OUTPUTS, k // GROUP_SIZE
    biased = (q.to(torch.int16) + 128).to(torch.uint8).reshape(tiles, TILE_OUTPUTS, blocks, 8, 4)
    halves = scale.to(torch.float16).reshape(tiles, TILE_OUTPUTS, blocks, 2).permute(0, 2, 3, 1)
    if minimum is None:
        minimum = torch.zeros(n, blocks)
    return torch.cat([biased.permute(0, 2, 3, 1, 4).reshape(tiles, blocks, 512),
                      halves.contiguous().view(torch.uint8).reshape(tiles, blocks, 64),
                      _records(minimum, tiles, blocks)], dim=-1).contiguous()


def unpack_q8k(packed: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """packed -> (q [n, k] int8, scale [n, k / 16], minimum [n, k / 32] float32): what pack_q8k stored."""
    tiles, blocks, _ = packed.shape
    q, _ = unpack_q8(torch.cat([packed[..., :512], packed[..., 576:]], dim=-1))
    halves = packed[..., 512:576].contiguous().view(torch.float16).reshape(tiles, blocks, 2, TILE_OUTPUTS)
    scale = halves.permute(0, 3, 1, 2).reshape(tiles * TILE_OUTPUTS, blocks * 2).float()
    return q, scale, _values(packed[..., 576:])


def q8k_weights(packed: Tensor) -> Tensor:
    """A packed Q8K weight's values, float32 [n, k]: scale q + minimum, one product and one sum per weight."""
    q, scale, minimum = unpack_q8k(packed)
    return q.float() * scale.repeat_interleave(16, 1) + minimum.repeat_interleave(GROUP_SIZE, 1)


def q8_rows(packed: Tensor, rows: Tensor) -> Tensor:
    """Output rows `rows` [T] of a packed Q8 weight, dequantized: [T, k] float32 (an embedding lookup)."""
    tiles, blocks, _ = packed.shape
    records = packed.index_select(0, rows // TILE_OUTPUTS)  # [T, blocks, 544]
    lanes = (rows % TILE_OUTPUTS).view(-1, 1, 1, 1, 1).expand(-1, blocks, 8, 1, 4)
    q = records[..., :512].reshape(-1, blocks, 8, TILE_OUTPUTS, 4).gather(3, lanes).squeeze(3)  # [T, blocks, 8, 4]
    d = records[..., 512:].contiguous().view(torch.float16).gather(2, (rows % TILE_OUTPUTS).view(-1, 1, 1).expand(-1, blocks, 1))
    return ((q.reshape(-1, blocks, GROUP_SIZE).float() - 128) * d.float()).reshape(-1, blocks * GROUP_SIZE)


def q8k_rows(packed: Tensor, rows: Tensor) -> Tensor:
    """Output rows `rows` [T] of a packed Q8K weight, dequantized as q8k_weights: [T, k] float32."""
    tiles, blocks, _ = packed.shape
    records = packed.index_select(0, rows // TILE_OUTPUTS)  # [T, blocks, 608]
    lanes = (rows % TILE_OUTPUTS).view(-1, 1, 1, 1, 1)
    q = records[..., :512].reshape(-1, blocks, 8, TILE_OUTPUTS, 4).gather(3, lanes.expand(-1, blocks, 8, 1, 4))
    halves = records[..., 512:576].contiguous().view(torch.float16).reshape(-1, blocks, 2, TILE_OUTPUTS)
    scale = halves.gather(3, lanes.view(-1, 1, 1, 1).expand(-1, blocks, 2, 1)).float()  # [T, blocks, 2, 1]
    minimum = records[..., 576:].contiguous().view(torch.float16).gather(2, lanes.view(-1, 1, 1).expand(-1, blocks, 1))
    product = (q.reshape(-1, blocks, 2, 16).float() - 128) * scale
    return (product + minimum.float().unsqueeze(-1)).reshape(-1, blocks * GROUP_SIZE)


def unpack_q8(packed: Tensor) -> tuple[Tensor, Tensor]:
    """packed -> (q [n, k] int8, d [n, k / 32] float32): what pack_q8 stored."""
    tiles, blocks, _ = packed.shape
    biased = packed[..., :512].reshape(tiles, blocks, 8, TILE_OUTPUTS, 4).permute(0, 3, 1, 2, 4)
    q = (biased.to(torch.int16) - 128).to(torch.int8).reshape(tiles * TILE_OUTPUTS, blocks * GROUP_SIZE)
    return q, _values(packed[..., 512:])


def pack_b16(weight: Tensor) -> Tensor:
    """weight [n, k] (rounded to bf16) -> packed uint8 [n / 16, k / 32, 1024]: per tile of 16 outputs and block
    of 32 inputs, bf16 [16 input pairs][16 outputs][2], the operand of vdpbf16ps and of an AMX tile."""
    n, k = weight.shape
    tiles, blocks = n // TILE_OUTPUTS, k // GROUP_SIZE
    values = weight.to(torch.bfloat16).reshape(tiles, TILE_OUTPUTS, blocks, GROUP_SIZE // 2, 2)  # [tile, lane, block, s, j]
    records = values.permute(0, 2, 3, 1, 4).reshape(tiles, blocks, GROUP_SIZE * TILE_OUTPUTS)
    return records.contiguous().view(torch.uint8)


def unpack_b16(packed: Tensor) -> Tensor:
    """packed -> weight [n, k] bf16: what pack_b16 stored."""
    tiles, blocks, _ = packed.shape
    values = packed.contiguous().view(torch.bfloat16).reshape(tiles, blocks, GROUP_SIZE // 2, TILE_OUTPUTS, 2)
    return values.permute(0, 3, 1, 2, 4).reshape(tiles * TILE_OUTPUTS, blocks * GROUP_SIZE)


def _apply(name: str, x: Tensor, packed: Tensor, out_dtype: torch.dtype) -> Tensor:
    library, reason = _library()
    if library is None:
        raise RuntimeError(f"the VNNI kernels cannot run here: {reason}")
    tiles, blocks, _ = packed.shape
    if x.dtype != torch.bfloat16 or x.dim() != 2 or x.shape[1] != blocks * GROUP_SIZE or x.device.type != "cpu":
        raise ValueError(f"x must be a CPU bfloat16 [rows, {blocks * GROUP_SIZE}] tensor, got {x.dtype} "
                         f"{tuple(x.shape)} on {x.device}")
    if out_dtype not in (torch.bfloat16, torch.float32):
        raise ValueError(f"out_dtype must be bfloat16 or float32, got {out_dtype}")
    x = x.contiguous()
    out = torch.empty(x.shape[0], tiles * TILE_OUTPUTS, dtype=out_dtype)
    if x.shape[0] and getattr(library, name)(x.data_ptr(), x.shape[0], blocks * GROUP_SIZE, packed.data_ptr(),
                                             tiles * TILE_OUTPUTS, out.data_ptr(), out_dtype == torch.float32,
                                             torch.get_num_threads()):
        raise MemoryError(f"{name} could not allocate scratch for {x.shape[0]} rows")
    return out


def apply_q4_linear(x: Tensor, packed: Tensor, out_dtype: torch.dtype = torch.bfloat16) -> Tensor:
    """x [rows, k] bfloat16, packed (pack_q4) -> [rows, n] in out_dtype (bfloat16 or float32)."""
    return _apply("q4_linear", x, packed, out_dtype)


def apply_q5_linear(x: Tensor, packed: Tensor, out_dtype: torch.dtype = torch.bfloat16) -> Tensor:
    """x [rows, k] bfloat16, packed (pack_q5) -> [rows, n] in out_dtype (bfloat16 or float32)."""
    return _apply("q5_linear", x, packed, out_dtype)


def apply_q8_linear(x: Tensor, packed: Tensor, out_dtype: torch.dtype = torch.bfloat16) -> Tensor:
    """x [rows, k] bfloat16, packed (pack_q8) -> [rows, n] in out_dtype (bfloat16 or float32)."""
    return _apply("q8_linear", x, packed, out_dtype)


def apply_q8k_linear(x: Tensor, packed: Tensor, out_dtype: torch.dtype = torch.bfloat16) -> Tensor:
    """x [rows, k] bfloat16, packed (pack_q8k) -> [rows, n] in out_dtype (bfloat16 or float32)."""
    return _apply("q8k_linear", x, packed, out_dtype)


def apply_b16_linear(x: Tensor, packed: Tensor, out_dtype: torch.dtype = torch.bfloat16) -> Tensor:
    """x [rows, k] bfloat16, packed (pack_b16) -> [rows, n] in out_dtype (bfloat16 or float32)."""
    return _apply("b16_linear", x, packed, out_dtype)
