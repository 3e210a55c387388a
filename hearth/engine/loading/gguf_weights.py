"""Read a GGUF file's 4-bit tensors (Q4_0, Q4_1) as they are, for the int4 kernels: no float round trip.

A Q4 block holds 32 weights of one output row: Q4_1 is d, m (float16) and 16 bytes of nibbles with
w = d q + m; Q4_0 is d and the nibbles with w = d (q - 8). Byte j holds weight j in its low nibble and
weight j + 16 in its high one. In the int4 kernels' form, w = (q - 8) * scale + zero: scale = d and
zero = m + 8 d (Q4_1) or 0 (Q4_0), both exact in float32.

llama.cpp's converter permutes the rows of attn_q and attn_k of 'llama' GGUFs for its rotary layout;
transformers undoes it when it loads one (LlamaTensorProcessor), and so does this reader, on whole rows.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from hearth.engine.model.formats.values import QuantizedValues

Q4_BLOCK = 32
_LAYER_NAMES = {
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}


def hf_name(gguf_name: str) -> str | None:
    """blk.3.attn_q.weight -> model.layers.3.self_attn.q_proj.weight; None for tensors not mapped."""
    match = re.fullmatch(r"blk\.(\d+)\.(\w+)\.weight", gguf_name)
    if match and match.group(2) in _LAYER_NAMES:
        return f"model.layers.{match.group(1)}.{_LAYER_NAMES[match.group(2)]}.weight"
    return None


def reverse_permute_rows(num_rows: int, num_heads: int) -> torch.Tensor:
    """Row order that undoes llama.cpp's q/k permutation (transformers' _reverse_permute_weights)."""
    dim = num_rows // num_heads // 2
    return torch.arange(num_rows).view(num_heads, dim, 2).transpose(1, 2).reshape(num_rows)


def decode_q4(data: np.ndarray, num_rows: int, num_cols: int, is_q4_1: bool) -> QuantizedValues:
    """data [num_rows, bytes per row] uint8 of Q4_0/Q4_1 blocks -> the int4 kernels' values."""
    block_bytes = 20 if is_q4_1 else 18
    blocks = torch.from_numpy(np.array(data, dtype=np.uint8, copy=True)).view(num_rows, num_cols // Q4_BLOCK, block_bytes)
    d = blocks[..., 0:2].contiguous().view(torch.float16).squeeze(-1).float()
    if is_q4_1:
        m = blocks[..., 2:4].contiguous().view(torch.float16).squeeze(-1).float()
        zero = m + 8 * d
    else:
        zero = torch.zeros_like(d)
    nibbles = blocks[..., block_bytes - 16:]
    q = torch.cat([nibbles & 0x0F, nibbles >> 4], dim=-1).reshape(num_rows, num_cols)
    return QuantizedValues(q=q, scale=d, zero=zero, group_size=Q4_BLOCK)


class Q4Tensor:
    """One 4-bit GGUF tensor, decoded only as far as asked: a tensor-parallel rank reads its own rows or
    columns from the memory-mapped file and never decodes the whole. Rows are in HF order (llama.cpp's
    q/k permutation undone through `order`)."""

    def __init__(self, data: np.ndarray, num_rows: int, num_cols: int, is_q4_1: bool, order: torch.Tensor | None) -> None:
        self.data, self.num_rows, self.num_cols, self.is_q4_1, self.order = data, num_rows, num_cols, is_q4_1, order

    def _stored_rows(self, start: int, stop: int) -> np.ndarray | slice:
        return slice(start, stop) if self.order is None else self.order[start:stop].numpy()

    def rows(self, start: int = 0, stop: int | None = None) -> QuantizedValues:
        """Output rows [start, stop) (all by default)."""
        stop = self.num_rows if stop is None else stop
        return decode_q4(self.data[self._stored_rows(start, stop)], stop - start, self.num_cols, self.is_q4_1)

    def cols(self, start: int, stop: int) -> QuantizedValues:
        """Input columns [start, stop), which must be whole 32-weight blocks."""
        if start % Q4_BLOCK or stop % Q4_BLOCK:
            raise ValueError(f"a 4-bit GGUF tensor splits only between {Q4_BLOCK}-weight blocks; columns "
                             f"[{start}, {stop}) do not (choose another tensor_parallel_size or quantization)")
        block_bytes = 20 if self.is_q4_1 else 18
        blocks = self.data.reshape(self.num_rows, self.num_cols // Q4_BLOCK, block_bytes)
        blocks = blocks[self._stored_rows(0, self.num_rows), start // Q4_BLOCK:stop // Q4_BLOCK]
        return decode_q4(blocks.reshape(self.num_rows, -1), self.num_rows, stop - start, self.is_q4_1)


def read_gguf_q4(path: Path, num_heads: int, num_kv_heads: int) -> dict[str, Q4Tensor]:
    """HF weight name -> its 4-bit tensor, for every Q4_0/Q4_1 projection in the file (others are not read).
    Nothing is decoded yet: see Q4Tensor."""
    from gguf import GGMLQuantizationType, GGUFReader

    reader = GGUFReader(str(path))
    field = reader.fields.get("general.architecture")
    architecture = bytes(field.parts[field.data[0]]).decode() if field is not None else ""
    result: dict[str, Q4Tensor] = {}
    for tensor in reader.tensors:
        name = hf_name(tensor.name)
        kind = tensor.tensor_type
        if name is None or kind not in (GGMLQuantizationType.Q4_0, GGMLQuantizationType.Q4_1):
            continue
        num_cols, num_rows = (int(n) for n in tensor.shape)  # GGUF lists dims innermost first
        heads = num_heads if ".q_proj" in name else num_kv_heads if ".k_proj" in name else None
        order = reverse_permute_rows(num_rows, heads) if heads is not None and architecture == "llama" else None
        data = tensor.data.reshape(num_rows, -1)
        result[name] = Q4Tensor(data, num_rows, num_cols, kind == GGMLQuantizationType.Q4_1, order)
    return result
