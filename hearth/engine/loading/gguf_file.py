"""A GGUF file as hearth reads it: one parsed reader per file, the Hugging Face name of each tensor, and the
weight format its own types call for.

Parsing a file's metadata (the tokenizer's token and merge arrays above all) takes seconds, so one reader is
kept per file and shared by the config, the tokenizer and the weights. Its tensors are numpy memmaps into
the file: nothing is copied until a layer reads its rows.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

# GGUF tensor name (blk.N. stripped) -> the HF Llama name (model.layers.N. prepended for layer tensors).
_LAYER_NAMES = {
    "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_MODEL_NAMES = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
                "output.weight": "lm_head.weight"}
# Tensors transformers' own GGUF loader drops too: llama.cpp's rope frequency factors are also in the metadata.
IGNORED = frozenset({"rope_freqs.weight"})

# The types whose values hearth serves as the file holds them, by the format that does (the rest of a file is
# dequantized to float32 and the serving format rounds it: see format_for).
FLOAT_TYPES = frozenset({"F32", "F16", "BF16"})
# The 4-bit types int4 packs as they are: name -> (weights, bytes) per block, the unit a tensor splits at.
Q4_BLOCKS = {"Q4_0": (32, 18), "Q4_1": (32, 20), "Q4_K": (256, 144)}
Q4_TYPES = frozenset(Q4_BLOCKS)
# Bits per weight of the quantized types hearth serves (the `mixed` format keeps each at its own grid).
QUANTIZED_BITS = {**{kind: 4 for kind in Q4_TYPES}, "Q5_0": 5, "Q5_1": 5, "Q5_K": 5, "Q6_K": 6, "Q8_0": 8}
# Types a format re-quantizes on purpose with a warning, because the result is at least as fine as the file's
# own grid: 8-bit blocks of 32 round a 5- or 6-bit K-quant weight by at most 1/8 of its own step.
FINER_IN_INT8 = frozenset(kind for kind, bits in QUANTIZED_BITS.items() if bits > 4)


def hf_name(gguf_name: str) -> str | None:
    """blk.3.attn_q.weight -> model.layers.3.self_attn.q_proj.weight, token_embd.weight ->
    model.embed_tokens.weight; None for a tensor a Llama model has no place for."""
    if gguf_name in _MODEL_NAMES:
        return _MODEL_NAMES[gguf_name]
    match = re.fullmatch(r"blk\.(\d+)\.(\w+)\.(weight|bias)", gguf_name)
    if match and match.group(2) in _LAYER_NAMES:
        return f"model.layers.{match.group(1)}.{_LAYER_NAMES[match.group(2)]}.{match.group(3)}"
    return None


class TensorInfo:
    """One tensor of the file: name, type (gguf.GGMLQuantizationType), shape (innermost first, as GGUF lists
    it) and data, a read-only numpy view into the mapped file: [rows, cols] values for F32 and F16, [rows,
    bytes per row] uint8 for the other types (gguf.GGUFReader's shapes)."""

    __slots__ = ("name", "tensor_type", "shape", "data")

    def __init__(self, name: str, tensor_type, shape: tuple[int, ...], data) -> None:
        self.name, self.tensor_type, self.shape, self.data = name, tensor_type, shape, data


class GGUFIndex:
    """The file's scalar and string metadata, its arrays on request, and its tensors. gguf.GGUFReader builds
    a numpy view per element of every metadata array (a tokenizer's ~100k tokens and merges: seconds per
    parse); this reads the same layout (GGUF v2/v3, little-endian), notes where each array lies and decodes
    one only when asked (`array`): the tokenizer's, once per start (gguf_metadata)."""

    _SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
    _STRING, _ARRAY = 8, 9

    def __init__(self, path: str) -> None:
        import struct

        import numpy as np
        from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

        self._mm = np.memmap(path, mode="r")
        buffer, self._pos = memoryview(self._mm), 0
        self._buffer, self._unpack = buffer, struct.unpack_from
        magic, version = self._read("<4sI")
        if magic != b"GGUF" or version not in (2, 3):
            raise ValueError(f"{path}: not a little-endian GGUF v2/v3 file (magic {magic!r}, version {version})")
        tensor_count, kv_count = self._read("<QQ")
        # Scalars and strings by key; an array's key maps to None here and to (item type, count, offset) in
        # _arrays.
        self.metadata: dict[str, object] = {}
        self._arrays: dict[str, tuple[int, int, int]] = {}
        for _ in range(kv_count):
            key = self._string()
            (value_type,) = self._read("<I")
            if value_type == self._ARRAY:
                item_type, count = self._read("<IQ")
                self._arrays[key] = (item_type, count, self._pos)
                self._skip_array(item_type, count)
                self.metadata[key] = None
            else:
                self.metadata[key] = self._value(value_type)
        infos = []
        for _ in range(tensor_count):
            name = self._string()
            (n_dims,) = self._read("<I")
            dims = self._read(f"<{n_dims}Q")
            kind, offset = self._read("<IQ")
            infos.append((name, tuple(int(d) for d in dims), GGMLQuantizationType(kind), offset))
        alignment = int(self.metadata.get("general.alignment", 32))
        start = -(-self._pos // alignment) * alignment
        self.tensors = []
        for name, dims, kind, offset in infos:
            block, block_bytes = GGML_QUANT_SIZES[kind]
            rows = tuple(reversed(dims))
            if kind.name in ("F32", "F16"):
                dtype, shape = (np.float32 if kind.name == "F32" else np.float16), rows
            else:
                dtype, shape = np.uint8, (*rows[:-1], rows[-1] // block * block_bytes)
            count = int(np.prod(shape))
            data = self._mm[start + offset:start + offset + count * np.dtype(dtype).itemsize].view(dtype).reshape(shape)
            self.tensors.append(TensorInfo(name, kind, dims, data))

    def _read(self, layout: str):
        import struct

        values = self._unpack(layout, self._buffer, self._pos)
        self._pos += struct.calcsize(layout)
        return values

    def _string(self) -> str:
        (length,) = self._read("<Q")
        text = bytes(self._buffer[self._pos:self._pos + length]).decode("utf-8", errors="replace")
        self._pos += length
        return text

    def array_length(self, key: str) -> int | None:
        """How many items the metadata array `key` holds, without decoding it; None if absent."""
        return self._arrays[key][1] if key in self._arrays else None

    def array(self, key: str) -> list | None:
        """The metadata array `key` decoded (strings as str, numbers as Python numbers), None if absent."""
        if key not in self._arrays:
            return None
        import numpy as np

        item_type, count, pos = self._arrays[key]
        if item_type == self._STRING:
            values, buffer, unpack = [], self._buffer, self._unpack
            for _ in range(count):
                (length,) = unpack("<Q", buffer, pos)
                values.append(str(buffer[pos + 8:pos + 8 + length], "utf-8", "replace"))
                pos += 8 + length
            return values
        if item_type == self._ARRAY:
            raise ValueError(f"metadata {key!r} is an array of arrays, which hearth does not read")
        return np.frombuffer(self._buffer, np.dtype(self._SCALARS[item_type]), count, pos).tolist()

    def _value(self, value_type: int):
        if value_type == self._STRING:
            return self._string()
        if value_type == self._ARRAY:  # an array inside an array: skipped
            self._skip_array(*self._read("<IQ"))
            return None
        return self._read(self._SCALARS[value_type])[0]

    def _skip_array(self, item_type: int, count: int) -> None:
        if item_type == self._STRING:
            for _ in range(count):
                (length,) = self._unpack("<Q", self._buffer, self._pos)
                self._pos += 8 + length
        elif item_type == self._ARRAY:
            for _ in range(count):
                self._value(self._ARRAY)
        else:
            import struct

            self._pos += count * struct.calcsize(self._SCALARS[item_type])


@functools.lru_cache(maxsize=4)
def _open(path: str, size: int, mtime_ns: int) -> GGUFIndex:
    return GGUFIndex(path)


def open_gguf(path: Path) -> GGUFIndex:
    """The file's GGUFIndex, parsed once per (path, size, mtime)."""
    stat = Path(path).stat()
    return _open(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


def field_value(reader: GGUFIndex, key: str, default=None):
    """A scalar or string metadata value (`general.architecture`), else `default`."""
    value = reader.metadata.get(key)
    return default if value is None else value


def tensor_types(path: Path) -> dict[str, str]:
    """GGUF tensor name -> its type's name, in file order."""
    return {t.name: t.tensor_type.name for t in open_gguf(path).tensors}


def projection_types(path: Path) -> dict[str, str]:
    """The types of the layers' projections (attn_*, ffn_* matrices): what decides a file's format."""
    return {name: kind for name, kind in tensor_types(path).items()
            if (hf := hf_name(name)) is not None and hf.endswith("_proj.weight")}


def format_for(path: Path) -> str:
    """The weight format a file's own projection types call for, when no `quantization` is given:
    int4 for files whose projections are all 4-bit (packed as they are), mixed for 4-bit ones beside 5- to
    8-bit ones (a Q4_K_M: each at its own grid), int8 for 5- to 8-bit ones alone (never a grid coarser than
    a tensor's own), bf16 for 16-bit floats and none (the float32 torch path) for float32. ValueError,
    naming the first tensor and
    its type, for types that no format holds at least as finely (Q2_K, Q3_K, IQ*): pass --quantization to
    re-quantize them on purpose."""
    kinds = projection_types(path)
    if not kinds:
        raise ValueError(f"{Path(path).name}: no Llama projection tensors (blk.N.attn_q.weight, ...) in the file")
    coarse = [(name, kind) for name, kind in kinds.items() if kind not in FLOAT_TYPES | Q4_TYPES | FINER_IN_INT8]
    if coarse:
        name, kind = coarse[0]
        raise ValueError(f"{Path(path).name}: tensor {name} is {kind} ({len(coarse)} tensors in types hearth does "
                         f"not serve as they are); pass --quantization int4 or int8 (in models.yaml: quantization) to re-quantize "
                         "them on purpose")
    values = set(kinds.values())
    if values <= Q4_TYPES:
        return "int4"
    if values <= Q4_TYPES | FINER_IN_INT8 and values & Q4_TYPES:
        # A 4-bit file with finer tensors (a Q4_K_M's Q6_K, llama-quantize's Q5_0 where rows are not whole
        # super-blocks): int4 would round those to 4 bits, int8 would double the 4-bit ones' memory.
        return "mixed"
    if values & (Q4_TYPES | FINER_IN_INT8):
        # 5- to 8-bit projections, or quantized ones beside 16-bit floats: int8 holds every quantized one
        # within 1/8 of its own step.
        return "int8"
    return "none" if values == {"F32"} else "bf16"
