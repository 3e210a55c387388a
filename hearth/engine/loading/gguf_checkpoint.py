"""A GGUF file's tensors by their Hugging Face names, read in place: the checkpoint a native Llama loads from
when its entry is a .gguf file (hearth.engine.distributed.sharding.CheckpointReader reads a folder's safetensors).

Float tensors are the file's memory-mapped values; quantized ones are dequantized to float32 by the gguf
package, row by row as asked (every GGUF row is whole blocks), so a tensor-parallel rank decodes only its own
rows. Values are exact: float32 holds every dequantized GGUF weight. Tensors a weight format packs as they are
(WeightFormat.gguf_values) are not read here at all. Nothing is written anywhere.

llama.cpp's converter permutes the rows of attn_q and attn_k of 'llama' GGUFs for its rotary layout;
transformers undoes it when it loads one (LlamaTensorProcessor), and so does this reader.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from hearth.engine.loading.gguf_blocks import DECODERS, decode_blocks
from hearth.engine.loading.gguf_file import IGNORED, QUANTIZED_BITS, hf_name, open_gguf
from hearth.engine.model.formats.values import Q8Blocks

Range = tuple[int, int]
# The types whose blocks are w = d q + minimum with q of at most 8 bits (every type gguf_blocks decodes): 8-bit
# records (WeightFormat.keeps_q8_0) hold them as they are.
Q8_BLOCK_TYPES = tuple(DECODERS)


def reverse_permute_rows(num_rows: int, num_heads: int) -> torch.Tensor:
    """Row order that undoes llama.cpp's q/k permutation (transformers' _reverse_permute_weights)."""
    dim = num_rows // num_heads // 2
    return torch.arange(num_rows).view(num_heads, dim, 2).transpose(1, 2).reshape(num_rows)


def stored_order(hf: str, num_rows: int, architecture: str, num_heads: int, num_kv_heads: int) -> Tensor | None:
    """The stored row of each HF row of a q/k projection (or its bias) of a 'llama' file; None when in order."""
    heads = num_heads if ".q_proj." in hf else num_kv_heads if ".k_proj." in hf else None
    return reverse_permute_rows(num_rows, heads) if heads is not None and architecture == "llama" else None


class GGUFCheckpoint:
    def __init__(self, path: Path, num_heads: int, num_kv_heads: int) -> None:
        from hearth.engine.loading.gguf_file import field_value

        self.path = Path(path)
        reader = open_gguf(self.path)
        architecture = field_value(reader, "general.architecture", "")
        self._tensors, self._order = {}, {}
        unplaced = []
        for tensor in reader.tensors:
            name = hf_name(tensor.name)
            if name is None:
                if tensor.name not in IGNORED:
                    unplaced.append(tensor.name)
                continue
            self._tensors[name] = tensor
            rows = int(tensor.shape[-1]) if len(tensor.shape) > 1 else int(tensor.shape[0])
            self._order[name] = stored_order(name, rows, architecture, num_heads, num_kv_heads)
        if unplaced:
            raise ValueError(f"{self.path.name}: tensors a Llama model has no place for: {unplaced[:5]}")

    def __enter__(self) -> GGUFCheckpoint:
        return self

    def __exit__(self, *exc) -> None:
        pass

    def names(self) -> set[str]:
        return set(self._tensors)

    def type_name(self, name: str) -> str:
        return self._tensors[name].tensor_type.name

    def source_bits(self, name: str) -> int | None:
        """Bits per weight of the tensor's quantized type (Q4_K: 4, Q6_K: 6, Q8_0: 8), None for a float type."""
        return QUANTIZED_BITS.get(self.type_name(name))

    def read(self, name: str, rows: Range | None = None, cols: Range | None = None) -> Tensor:
        """The tensor (float16/bfloat16/float32 as stored, float32 for quantized types), or its rows
        [start, stop), or its columns [start, stop), as a contiguous tensor of its own."""
        if name not in self._tensors:
            raise KeyError(f"weight {name!r} is missing from {self.path.name}")
        tensor = self._tensors[name]
        values = _to_torch(self._stored_rows(name, rows), tensor.tensor_type)
        return values if cols is None else values[:, cols[0]:cols[1]].contiguous()

    def _stored_rows(self, name: str, rows: Range | None) -> np.ndarray:
        """HF rows [start, stop) (all by default) of the tensor's stored data, q/k permutation undone."""
        data, order = self._tensors[name].data, self._order[name]
        start, stop = rows if rows is not None else (0, data.shape[0])
        return data[slice(start, stop) if order is None else order[start:stop].numpy()]

    def q8_blocks(self, name: str, rows: Range | None = None, cols: Range | None = None) -> Q8Blocks | None:
        """A tensor's blocks (w = d q + minimum, q of at most 8 bits) exactly as the file holds them, or its rows'
        or its columns' (whole 32-blocks), for a format that packs them without a float round trip; None for
        any other type or a column range inside a block."""
        kind = self._tensors[name].tensor_type.name
        if kind not in Q8_BLOCK_TYPES or (cols is not None and (cols[0] % 32 or cols[1] % 32)):
            return None
        data = self._stored_rows(name, rows)
        values = decode_blocks(data.reshape(data.shape[0], -1), data.shape[0], kind)
        q, d, minimum = values.q.to(torch.int8), values.scale, values.minimum
        if cols is not None:
            q, d = q[:, cols[0]:cols[1]].contiguous(), d[:, cols[0] // values.block:cols[1] // values.block].contiguous()
            minimum = None if minimum is None else minimum[:, cols[0] // 32:cols[1] // 32].contiguous()
        return Q8Blocks(q=q, d=d, minimum=minimum, block=values.block)


def _to_torch(data: np.ndarray, kind) -> Tensor:
    """Stored values (rows of one tensor, a view into the mapped file) -> a tensor of their values that owns
    its memory (a view would keep the file's mapping alive, and resident_bytes would count it)."""
    name = kind.name
    if name in ("F32", "F16"):
        return torch.from_numpy(np.array(data, copy=True))
    if name == "BF16":
        return torch.from_numpy(np.array(data, copy=True).view(np.int16)).view(torch.bfloat16)
    from gguf.quants import dequantize

    return torch.from_numpy(np.ascontiguousarray(dequantize(data, kind), dtype=np.float32))
