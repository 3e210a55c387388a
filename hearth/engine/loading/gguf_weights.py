"""Read a GGUF file's 4-bit tensors (Q4_0, Q4_1, Q4_K) as they are, for the int4 kernels: no float round trip.

The blocks are decoded by hearth.engine.loading.gguf_blocks (layouts there). In the int4 kernels' form,
w = (q - 8) * scale + zero: scale = d and zero = m + 8 d (Q4_1) or 0 (Q4_0), both exact in float32. A Q4_K
super-block of 256 is 8 such blocks of 32: scale = d sc is exact, zero = 8 d sc - dmin m is rounded once in
float32.

Rows are in HF order: llama.cpp's q/k permutation is undone on whole rows (gguf_checkpoint.stored_order).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from hearth.engine.loading.gguf_blocks import BlockValues, decode_blocks
from hearth.engine.loading.gguf_checkpoint import stored_order
from hearth.engine.loading.gguf_file import Q4_BLOCKS, field_value, hf_name, open_gguf
from hearth.engine.model.formats.values import QuantizedValues

Q4_BLOCK = 32
# The types read as they are: name -> (weights, bytes) per block, the unit a tensor splits at.
Q4_TYPES = Q4_BLOCKS
# Projections one layer fuses (hearth.engine.distributed.layers): read as they are only all together.
_FUSED = (("attn_q", "attn_k", "attn_v"), ("ffn_gate", "ffn_up"))


def projection_name(gguf_name: str) -> str | None:
    """The HF name of a layer projection's weight (blk.3.attn_q.weight -> ...q_proj.weight), else None."""
    name = hf_name(gguf_name)
    return name if name is not None and name.endswith("_proj.weight") else None


def int4_values(values: BlockValues) -> QuantizedValues:
    """A 4-bit type's decoded blocks (gguf_blocks: Q4_0's q - 8, or Q4_1's and Q4_K's q with their minimum) in the
    int4 kernels' form, w = (q - 8) * scale + zero, q in 0..15."""
    if values.minimum is None:
        return QuantizedValues(q=(values.q + 8).to(torch.uint8), scale=values.scale,
                               zero=torch.zeros_like(values.scale), group_size=Q4_BLOCK)
    return QuantizedValues(q=values.q, scale=values.scale, zero=values.minimum + 8 * values.scale, group_size=Q4_BLOCK)


class Q4Tensor:
    """One 4-bit GGUF tensor, decoded only as far as asked: a tensor-parallel rank reads its own rows or
    columns from the memory-mapped file and never decodes the whole. Rows are in HF order (llama.cpp's
    q/k permutation undone through `order`)."""

    def __init__(self, data: np.ndarray, num_rows: int, num_cols: int, kind: str, order: torch.Tensor | None) -> None:
        self.data, self.num_rows, self.num_cols, self.kind, self.order = data, num_rows, num_cols, kind, order

    def _decode(self, data: np.ndarray, num_rows: int) -> QuantizedValues:
        return int4_values(decode_blocks(data, num_rows, self.kind))

    def _stored_rows(self, start: int, stop: int) -> np.ndarray | slice:
        return slice(start, stop) if self.order is None else self.order[start:stop].numpy()

    def rows(self, start: int = 0, stop: int | None = None) -> QuantizedValues:
        """Output rows [start, stop) (all by default)."""
        stop = self.num_rows if stop is None else stop
        return self._decode(self.data[self._stored_rows(start, stop)], stop - start)

    def cols(self, start: int, stop: int) -> QuantizedValues:
        """Input columns [start, stop), which must be whole blocks (32 weights; 256 for Q4_K)."""
        block, block_bytes = Q4_TYPES[self.kind]
        if start % block or stop % block:
            raise ValueError(f"a {self.kind} GGUF tensor splits only between {block}-weight blocks; columns "
                             f"[{start}, {stop}) do not (choose another tensor_parallel_size or quantization)")
        blocks = self.data.reshape(self.num_rows, self.num_cols // block, block_bytes)
        blocks = blocks[self._stored_rows(0, self.num_rows), start // block:stop // block]
        return self._decode(blocks.reshape(self.num_rows, -1), self.num_rows)


def read_gguf_q4(path: Path, num_heads: int, num_kv_heads: int) -> dict[str, Q4Tensor]:
    """HF weight name -> its 4-bit tensor, for every Q4_TYPES projection in the file (others are not read; nor
    are a layer's fused projections unless all of them are 4-bit, as Q4_K_M's attn_v in Q6_K leaves attn_q
    and attn_k). Nothing is decoded yet: see Q4Tensor."""
    reader = open_gguf(path)
    architecture = field_value(reader, "general.architecture", "")
    result: dict[str, Q4Tensor] = {}
    for tensor in reader.tensors:
        name = projection_name(tensor.name)
        kind = tensor.tensor_type
        if name is None or kind.name not in Q4_TYPES:
            continue
        num_cols, num_rows = (int(n) for n in tensor.shape)  # GGUF lists dims innermost first
        order = stored_order(name, num_rows, architecture, num_heads, num_kv_heads)
        data = tensor.data.reshape(num_rows, -1)
        result[tensor.name] = Q4Tensor(data, num_rows, num_cols, kind.name, order)
    return {projection_name(gguf_name): t for gguf_name, t in result.items() if _fused_are_read(gguf_name, result)}


def fused_group(gguf_name: str) -> tuple[str, ...]:
    """The tensors one layer fuses with `gguf_name`, itself included (blk.N.attn_q.weight: attn_q, attn_k,
    attn_v of blk.N; a tensor fused with none: itself)."""
    if gguf_name.count(".") < 2:
        return (gguf_name,)
    prefix, kind, suffix = gguf_name.rsplit(".", 2)
    group = next((g for g in _FUSED if kind in g), (kind,))
    return tuple(f"{prefix}.{member}.{suffix}" for member in group)


def _fused_are_read(gguf_name: str, read: dict) -> bool:
    """blk.N.attn_q.weight is kept only with blk.N.attn_k and attn_v (likewise ffn_gate with ffn_up)."""
    return all(member in read for member in fused_group(gguf_name))
