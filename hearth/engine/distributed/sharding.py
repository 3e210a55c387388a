"""Which slice of each Llama weight a rank holds (Megatron layout), and how it is read.

- q/k/v and gate/up are column-parallel: a rank holds the output rows of its heads and of its slice of the
  intermediate features, so attention and the MLP's activation run on local data.
- o and down are row-parallel: a rank holds the input columns matching those rows and produces a partial
  sum; the forward adds the partials with one all-reduce after each (hearth.engine.model.models.llama).
- The embedding and lm_head hold a contiguous range of the vocabulary each.
- KV heads are split in contiguous ranges, the query heads of a KV head going with it. With more ranks
  than KV heads each KV head is replicated on tensor_parallel_size / num_kv_heads ranks, which split its
  query heads (as vLLM does).
Norms are small and replicated. A split may be uneven (9 heads, 3 KV heads over 2 ranks: 3 and 6 query
heads); all-reduce and the logits gather do not need equal shards.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor


def split_range(total: int, parts: int, index: int, unit: int = 1) -> tuple[int, int]:
    """[start, stop) of piece `index` when [0, total) is cut into `parts` contiguous pieces of whole
    `unit`s whose sizes differ by at most one unit (`unit` falls back to 1 when it does not divide total)."""
    if total % unit or total // unit < parts:
        unit = 1
    units = total // unit
    return index * units // parts * unit, (index + 1) * units // parts * unit


@dataclass(frozen=True)
class LlamaPartition:
    """Rank `rank`'s share of a Llama model, as [start, stop) ranges of heads, features and vocabulary."""

    rank: int
    world_size: int
    q_heads: tuple[int, int]
    kv_heads: tuple[int, int]
    intermediate: tuple[int, int]
    vocab: tuple[int, int]
    # Every rank's vocabulary width, in rank order (the logits gather puts them side by side).
    vocab_widths: tuple[int, ...]
    # The most KV heads any rank caches: every rank sizes its KV cache by it, so all have the same blocks.
    max_kv_heads: int

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank must be in [0, {self.world_size}), got {self.rank}")
        for name in ("q_heads", "kv_heads", "intermediate", "vocab"):
            start, stop = getattr(self, name)
            if not 0 <= start < stop:
                raise ValueError(f"{name} must be a non-empty range [start, stop), got {(start, stop)}")
        if len(self.vocab_widths) != self.world_size:
            raise ValueError(f"vocab_widths must have {self.world_size} entries, got {len(self.vocab_widths)}")

    @property
    def num_heads(self) -> int:
        return self.q_heads[1] - self.q_heads[0]

    @property
    def num_kv_heads(self) -> int:
        return self.kv_heads[1] - self.kv_heads[0]

    @classmethod
    def build(cls, shape, rank: int, world_size: int, unit: int = 32) -> LlamaPartition:
        """shape: a LlamaShape. Intermediate features are cut at multiples of `unit` (the int4 group size,
        so a quantized down projection splits between whole groups) when it divides them."""
        q_heads, kv_heads = head_ranges(shape.num_heads, shape.num_kv_heads, world_size, rank)
        if shape.intermediate_size < world_size or shape.vocab_size < world_size:
            raise ValueError(f"tensor_parallel_size={world_size} exceeds intermediate_size "
                             f"({shape.intermediate_size}) or vocab_size ({shape.vocab_size})")
        widths = tuple(b - a for a, b in (split_range(shape.vocab_size, world_size, r) for r in range(world_size)))
        max_kv = max(head_ranges(shape.num_heads, shape.num_kv_heads, world_size, r)[1][1]
                     - head_ranges(shape.num_heads, shape.num_kv_heads, world_size, r)[1][0] for r in range(world_size))
        return cls(rank, world_size, q_heads, kv_heads, split_range(shape.intermediate_size, world_size, rank, unit),
                   split_range(shape.vocab_size, world_size, rank), widths, max_kv)


def head_ranges(num_heads: int, num_kv_heads: int, world_size: int, rank: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """(query heads, KV heads) of `rank`, as [start, stop) ranges."""
    if num_heads % num_kv_heads:
        raise ValueError(f"num_attention_heads ({num_heads}) must be a multiple of num_key_value_heads ({num_kv_heads})")
    group = num_heads // num_kv_heads
    if world_size <= num_kv_heads:
        k0, k1 = split_range(num_kv_heads, world_size, rank)
        return (k0 * group, k1 * group), (k0, k1)
    replicas = world_size // num_kv_heads
    if world_size % num_kv_heads or group % replicas:
        raise ValueError(
            f"tensor_parallel_size={world_size} cannot shard {num_heads} attention heads over {num_kv_heads} KV "
            f"heads: above num_key_value_heads it must be a multiple of it ({num_kv_heads}) that divides the "
            f"{group} query heads of each KV head among its replicas")
    kv = rank // replicas
    per_rank = group // replicas
    q0 = kv * group + rank % replicas * per_rank
    return (q0, q0 + per_rank), (kv, kv + 1)


class CheckpointReader:
    """A folder's safetensors, read slice by slice (safe_open(...).get_slice): only the rows or columns
    asked for leave the file, so no rank ever holds another rank's shards."""

    def __init__(self, folder: Path) -> None:
        from safetensors import safe_open

        files = sorted(Path(folder).glob("*.safetensors"))
        if not files:
            raise FileNotFoundError(f"no *.safetensors weights in {folder}")
        self._stack = ExitStack()
        self._handles = {}
        for file in files:
            handle = self._stack.enter_context(safe_open(str(file), framework="pt", device="cpu"))
            for name in handle.keys():  # noqa: SIM118 (safe_open is not a dict)
                self._handles[name] = handle

    def __enter__(self) -> CheckpointReader:
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    def names(self) -> set[str]:
        return set(self._handles)

    def source_bits(self, name: str) -> int | None:
        """None: a folder's safetensors hold float weights (GGUFCheckpoint.source_bits gives a quantized type's)."""
        return None

    def q8_blocks(self, name: str, rows: tuple[int, int] | None = None, cols: tuple[int, int] | None = None) -> None:
        """None: a folder's safetensors hold no GGUF blocks (GGUFCheckpoint.q8_blocks)."""
        return None

    def read(self, name: str, rows: tuple[int, int] | None = None, cols: tuple[int, int] | None = None) -> Tensor:
        """The tensor, or its rows [start, stop), or its columns [start, stop), as a contiguous tensor of its
        own: safetensors' slices can be views into the memory-mapped file that keep the whole tensor's
        mapping alive (resident_bytes would count, and a rank would hold, the whole)."""
        if name not in self._handles:
            raise KeyError(f"weight {name!r} is missing from the checkpoint")
        piece = self._handles[name].get_slice(name)
        if rows is not None:
            piece = piece[rows[0]:rows[1]]
        elif cols is not None:
            piece = piece[:, cols[0]:cols[1]]
        else:
            piece = piece[:]
        return piece.clone(memory_format=torch.contiguous_format)


def resident_bytes(*objects) -> int:
    """Bytes of the distinct tensor storages reachable from `objects` (through attributes, lists, dicts
    and tuples): a slice that kept a whole tensor's storage alive counts whole. oneDNN's prepacked
    weights (opaque tensors, no storage) count numel * element size. Only hearth's own objects are
    walked into (not process groups or processes)."""
    seen: set = set()
    total = 0
    stack = list(objects)
    visited: set[int] = set()
    while stack:
        obj = stack.pop()
        if isinstance(obj, Tensor):
            if obj.is_mkldnn:
                key, size = ("opaque", id(obj)), obj.numel() * obj.element_size()
            else:
                storage = obj.untyped_storage()
                key, size = ("storage", storage.data_ptr(), obj.device), storage.nbytes()
            if key not in seen:
                seen.add(key)
                total += size
        elif id(obj) not in visited:
            visited.add(id(obj))
            if isinstance(obj, dict):
                stack.extend(obj.values())
            elif isinstance(obj, (list, tuple)):
                stack.extend(obj)
            elif type(obj).__module__.startswith("hearth.engine.") and hasattr(obj, "__dict__"):  # hearth's own layers
                stack.extend(vars(obj).values())
    return total
