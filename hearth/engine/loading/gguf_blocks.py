"""A GGUF tensor's blocks (Q8_0, Q5_0, Q5_1, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K), decoded exactly: integer values and float32 block
scales.

Layouts as in llama.cpp's ggml-common.h (block_*) and ggml-quants.c (dequantize_row_*); every block holds
weights of one output row, bytes little-endian, d and dmin float16:

- Q8_0, 34 bytes per 32 weights: d, then 32 int8 q.                         w = d q
- Q5_0, 22 bytes per 32: d, 4 bytes qh, 16 bytes of nibbles.                w = d (q - 16), q in 0..31
  Byte j of the nibbles holds weight j in its low nibble and weight j + 16 in its high one; bit j of qh
  (a little-endian uint32) is weight j's fifth bit (16).
- Q5_1, 24 bytes per 32: d, m, 4 bytes qh, 16 bytes of nibbles, as Q5_0.      w = d q + m, q in 0..31
- Q4_0, 18 bytes per 32: d, 16 bytes of nibbles, as Q5_0's.                 w = d (q - 8), q in 0..15
- Q4_1, 20 bytes per 32: d, m, 16 bytes of nibbles.                         w = d q + m, q in 0..15
- Q4_K, 144 bytes per 256: d, dmin, 12 bytes of eight 6-bit (sc, m) pairs, 128 bytes of nibbles.
  Sub-block j of 32 weights: w = d sc_j q - dmin m_j, q in 0..15. Each 64 weights share 32 bytes, the
  first 32 in the low nibbles, the next 32 in the high ones.
- Q5_K, 176 bytes per 256: as Q4_K, with 32 bytes qh before the nibbles: bit j of qh[l] is the fifth bit
  (16) of weight l of sub-block j. q in 0..31.
- Q6_K, 210 bytes per 256: 128 bytes ql (low 4 bits), 64 bytes qh (high 2 bits), 16 int8 scales, d.
  Sub-block i of 16 weights: w = d sc_i (q - 32), q - 32 in -32..31.

Decoded, each form is w = scale q + minimum per block (BlockValues), with scale = d sc and minimum = -dmin m
(Q4_1's and Q5_1's m; none for the symmetric forms). Those products of a float16 and an integer of at most 8 bits are exact in
float32, so BlockValues.weights() computes what gguf.quants.dequantize computes, operation for operation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

QK_K = 256
# type name -> (weights per block, bytes per block), as gguf.constants.GGML_QUANT_SIZES.
BLOCK_SHAPES = {"Q8_0": (32, 34), "Q5_0": (32, 22), "Q5_1": (32, 24), "Q4_0": (32, 18), "Q4_1": (32, 20), "Q4_K": (QK_K, 144), "Q5_K": (QK_K, 176), "Q6_K": (QK_K, 210)}


@dataclass(frozen=True)
class BlockValues:
    """w = scale q + minimum, per block of `block` consecutive inputs of a row.

    q [rows, cols]: uint8 for Q4_1, Q4_K (0..15), Q5_1 and Q5_K (0..31), int8 for Q8_0 (-128..127), Q5_0
    (-16..15), Q4_0 (-8..7) and Q6_K (-32..31); scale and minimum [rows, cols / block] float32 (minimum per 32);
    minimum None for Q8_0, Q5_0, Q4_0 and Q6_K."""

    q: Tensor
    scale: Tensor
    minimum: Tensor | None
    block: int

    def weights(self) -> Tensor:
        """float32 [rows, cols]: one product and (with a minimum) one sum per weight, as ggml computes them
        (kept as two operations: a fused multiply-add would round differently)."""
        product = self.q.float() * self.scale.repeat_interleave(self.block, 1)
        return product if self.minimum is None else product + self.minimum.repeat_interleave(self.block, 1)


def _blocks(data: np.ndarray, num_rows: int, kind: str) -> Tensor:
    """uint8 [rows, bytes per row] (a view of the mmap, any row selection) -> uint8 [rows, blocks, bytes]."""
    block_bytes = BLOCK_SHAPES[kind][1]
    return torch.from_numpy(np.array(data, dtype=np.uint8, copy=True)).view(num_rows, -1, block_bytes)


def _half(raw: Tensor) -> Tensor:
    """uint8 [..., 2] -> float32 [...]: one float16 per trailing pair."""
    return raw.contiguous().view(torch.float16).squeeze(-1).float()


def _k_scales(packed: Tensor) -> tuple[Tensor, Tensor]:
    """12 bytes [..., 12] -> eight 6-bit (sc, m) [..., 8] each (ggml-quants.c get_scale_min_k4): sub-blocks
    0..3 in the low 6 bits of bytes 0..3 (sc) and 4..7 (m); sub-blocks 4..7 in the nibbles of bytes 8..11,
    their top 2 bits in the top 2 bits of bytes 0..3 (sc) and 4..7 (m)."""
    low_sc, low_m, nibbles = packed[..., 0:4], packed[..., 4:8], packed[..., 8:12]
    sc = torch.cat([low_sc & 63, (nibbles & 15) | ((low_sc >> 2) & 0x30)], dim=-1)
    m = torch.cat([low_m & 63, (nibbles >> 4) | ((low_m >> 2) & 0x30)], dim=-1)
    return sc, m


def _nibbles_k(qs: Tensor) -> Tensor:
    """128 bytes [rows, supers, 128] -> [rows, supers, 8, 32]: sub-block 2c in the low nibbles of bytes
    32c..32c+31, sub-block 2c + 1 in their high nibbles."""
    chunks = qs.reshape(*qs.shape[:2], 4, 1, 32)
    return torch.cat([chunks & 15, chunks >> 4], dim=3).reshape(*qs.shape[:2], 8, 32)


def _scaled_k(blocks: Tensor) -> tuple[Tensor, Tensor]:
    """Q4_K/Q5_K header -> (scale, minimum) [rows, supers * 8] float32."""
    d, dmin = _half(blocks[..., 0:2]), _half(blocks[..., 2:4])
    sc, m = _k_scales(blocks[..., 4:16])
    num_rows = blocks.shape[0]
    scale = d.unsqueeze(-1) * sc.float()
    minimum = -(dmin.unsqueeze(-1) * m.float())
    return scale.reshape(num_rows, -1), minimum.reshape(num_rows, -1)


def decode_q8_0(data: np.ndarray, num_rows: int) -> BlockValues:
    blocks = _blocks(data, num_rows, "Q8_0")
    q = blocks[..., 2:].contiguous().view(torch.int8).reshape(num_rows, -1)
    return BlockValues(q=q, scale=_half(blocks[..., 0:2]), minimum=None, block=32)


def decode_q5_0(data: np.ndarray, num_rows: int) -> BlockValues:
    blocks = _blocks(data, num_rows, "Q5_0")
    qh, nibbles = blocks[..., 2:6], blocks[..., 6:22]
    fifth = ((qh.unsqueeze(-1) >> torch.arange(8, dtype=torch.uint8)) & 1).flatten(-2)  # [rows, blocks, 32]
    q = torch.cat([nibbles & 0x0F, nibbles >> 4], dim=-1) | (fifth << 4)
    return BlockValues(q=(q.to(torch.int8) - 16).reshape(num_rows, -1), scale=_half(blocks[..., 0:2]), minimum=None,
                       block=32)


def _fifth_bits(qh: Tensor) -> Tensor:
    """4 bytes qh [rows, blocks, 4] -> [rows, blocks, 32]: bit j of the little-endian uint32, as 0 or 16."""
    return ((qh.unsqueeze(-1) >> torch.arange(8, dtype=torch.uint8)) & 1).flatten(-2) << 4


def _nibbles(qs: Tensor) -> Tensor:
    """16 bytes [rows, blocks, 16] -> [rows, blocks, 32]: weight j in byte j's low nibble, j + 16 in its high."""
    return torch.cat([qs & 0x0F, qs >> 4], dim=-1)


def decode_q5_1(data: np.ndarray, num_rows: int) -> BlockValues:
    blocks = _blocks(data, num_rows, "Q5_1")
    q = _nibbles(blocks[..., 8:24]) | _fifth_bits(blocks[..., 4:8])
    return BlockValues(q=q.reshape(num_rows, -1), scale=_half(blocks[..., 0:2]), minimum=_half(blocks[..., 2:4]),
                       block=32)


def decode_q4_0(data: np.ndarray, num_rows: int) -> BlockValues:
    blocks = _blocks(data, num_rows, "Q4_0")
    q = _nibbles(blocks[..., 2:18]).to(torch.int8) - 8
    return BlockValues(q=q.reshape(num_rows, -1), scale=_half(blocks[..., 0:2]), minimum=None, block=32)


def decode_q4_1(data: np.ndarray, num_rows: int) -> BlockValues:
    blocks = _blocks(data, num_rows, "Q4_1")
    return BlockValues(q=_nibbles(blocks[..., 4:20]).reshape(num_rows, -1), scale=_half(blocks[..., 0:2]),
                       minimum=_half(blocks[..., 2:4]), block=32)


def decode_q4_k(data: np.ndarray, num_rows: int) -> BlockValues:
    blocks = _blocks(data, num_rows, "Q4_K")
    scale, minimum = _scaled_k(blocks)
    q = _nibbles_k(blocks[..., 16:144]).reshape(num_rows, -1)
    return BlockValues(q=q, scale=scale, minimum=minimum, block=32)


def decode_q5_k(data: np.ndarray, num_rows: int) -> BlockValues:
    blocks = _blocks(data, num_rows, "Q5_K")
    scale, minimum = _scaled_k(blocks)
    qh = blocks[..., 16:48].unsqueeze(2)  # [rows, supers, 1, 32]
    bits = torch.arange(8, dtype=torch.uint8).view(1, 1, 8, 1)
    high = ((qh >> bits) & 1) << 4  # [rows, supers, 8, 32]: bit j for sub-block j
    q = (_nibbles_k(blocks[..., 48:176]) | high).reshape(num_rows, -1)
    return BlockValues(q=q, scale=scale, minimum=minimum, block=32)


def decode_q6_k(data: np.ndarray, num_rows: int) -> BlockValues:
    """Each half of 128 weights reads 64 bytes of ql and 32 of qh: quarter k (32 weights) takes the low
    (k < 2) or high (k >= 2) nibbles of ql[32 (k % 2) + l] and bits 2k, 2k + 1 of qh[l]."""
    blocks = _blocks(data, num_rows, "Q6_K")
    supers = blocks.shape[1]
    ql = blocks[..., 0:128].reshape(num_rows, supers, 2, 1, 2, 32)  # [rows, supers, half, 1, k % 2, l]
    low = torch.cat([ql & 15, ql >> 4], dim=3).reshape(num_rows, supers, 2, 4, 32)  # quarter k = 2 nibble + k % 2
    qh = blocks[..., 128:192].reshape(num_rows, supers, 2, 1, 32)
    shifts = torch.tensor([0, 2, 4, 6], dtype=torch.uint8).view(1, 1, 1, 4, 1)
    high = ((qh >> shifts) & 3) << 4
    q = ((low | high).to(torch.int8) - 32).reshape(num_rows, -1)
    sc = blocks[..., 192:208].contiguous().view(torch.int8).float()  # [rows, supers, 16]
    scale = (_half(blocks[..., 208:210]).unsqueeze(-1) * sc).reshape(num_rows, -1)
    return BlockValues(q=q, scale=scale, minimum=None, block=16)


DECODERS = {"Q8_0": decode_q8_0, "Q5_0": decode_q5_0, "Q5_1": decode_q5_1, "Q4_0": decode_q4_0, "Q4_1": decode_q4_1, "Q4_K": decode_q4_k, "Q5_K": decode_q5_k, "Q6_K": decode_q6_k}


def decode_blocks(data: np.ndarray, num_rows: int, kind: str) -> BlockValues:
    """data uint8 [num_rows, bytes per row] of a `kind` tensor (a GGMLQuantizationType's name)."""
    if kind not in DECODERS:
        raise ValueError(f"no block decoder for GGUF type {kind}; decoded here: {tuple(DECODERS)}")
    return DECODERS[kind](data, num_rows)
