"""Load a model entry: config, tokenizer and weights, natively when the architecture allows."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hearth.engine.config import EngineConfig
from hearth.engine.distributed.group import TensorParallelGroup
from hearth.engine.distributed.sharding import CheckpointReader, LlamaPartition
from hearth.engine.loading.gguf_checkpoint import GGUFCheckpoint
from hearth.engine.loading.gguf_convert import converted_from
from hearth.engine.loading.gguf_metadata import gguf_config, gguf_eos_token_ids, gguf_tokenizer, transformers_config
from hearth.engine.loading.registry import ModelEntry
from hearth.engine.model.models.llama import LlamaModel, LlamaShape, supports_native

logger = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    folder: Path
    config: Any
    tokenizer: Any
    # LlamaModel (native) or hearth.engine.model.models.hf_module.HFModule (transformers' module).
    model: Any
    is_native: bool
    eos_token_ids: tuple[int, ...]
    max_model_len: int
    vocab_size: int
    dtype: torch.dtype
    device: torch.device
    # hearth.engine.distributed.group.TensorParallelGroup this rank belongs to (a group of one without tensor
    # parallelism).
    group: Any = None
    # KV heads this rank's cache holds, and the most any rank holds (every rank sizes its cache by it).
    num_kv_heads: int = 0
    max_rank_kv_heads: int = 0
    # Resident weight bytes of every rank, in rank order (LlamaModel.resident_weight_bytes).
    rank_weight_bytes: tuple[int, ...] = ()


def _check_exists(entry: ModelEntry) -> None:
    if not entry.exists():
        raise FileNotFoundError(
            f"model {entry.id!r} not found at {entry.path} (run `make setup` or `python -m hearth.engine.loading.fetch` "
            "for registry models with a source)"
        )


def model_config(entry: ModelEntry):
    """The entry's config: its folder's config.json (transformers'), or built from a .gguf file's metadata."""
    _check_exists(entry)
    if entry.is_gguf:
        return gguf_config(entry.path)
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(entry.path)


def model_tokenizer(entry: ModelEntry):
    """The entry's tokenizer (with its chat template): its folder's, or built from a .gguf file's metadata."""
    _check_exists(entry)
    if entry.is_gguf:
        return gguf_tokenizer(entry.path)
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(entry.path)


def source_gguf(entry: ModelEntry, folder: Path) -> Path | None:
    """The GGUF file the model's weights came from, if it is still on disk (hearth.engine.loading.fetch keeps it)."""
    return entry.path if entry.is_gguf else converted_from(folder)


def checkpoint(entry: ModelEntry, folder: Path, num_heads: int, num_kv_heads: int):
    """Where the weights are read from: a .gguf file in place, else the folder's safetensors."""
    if entry.is_gguf:
        return GGUFCheckpoint(entry.path, num_heads, num_kv_heads)
    return CheckpointReader(folder)


def eos_token_ids(entry: ModelEntry, config, tokenizer) -> tuple[int, ...]:
    if entry.is_gguf:
        return gguf_eos_token_ids(entry.path, tokenizer)
    folder = entry.path
    ids: set[int] = set()
    try:
        from transformers import GenerationConfig

        generation = GenerationConfig.from_pretrained(folder)
        value = generation.eos_token_id
        ids.update(value if isinstance(value, list) else [value] if value is not None else [])
    except OSError:
        pass
    if getattr(config, "eos_token_id", None) is not None:
        value = config.eos_token_id
        ids.update(value if isinstance(value, list) else [value])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return tuple(sorted(ids))


def check_tensor_parallel(entry: ModelEntry, config: EngineConfig, hf_config=None) -> str | None:
    """Raises ValueError when the entry cannot be sharded over config.tensor_parallel_size ranks (checked before
    any rank starts); returns why the native forward cannot run it (None when it can)."""
    if hf_config is None:
        hf_config = model_config(entry)
    reason = supports_native(hf_config) if config.use_native_model else "native forward disabled"
    world_size = config.tensor_parallel_size
    if world_size > 1:
        if reason is not None:
            raise ValueError(f"tensor_parallel_size={world_size} needs the native forward, which {entry.id!r} "
                             f"cannot use: {reason}")
        LlamaPartition.build(LlamaShape.from_config(hf_config), 0, world_size, config.weight_format.group_size)
    return reason


def load_model(entry: ModelEntry, config: EngineConfig, group: TensorParallelGroup | None = None) -> LoadedModel:
    """The entry's model; under tensor parallelism the shard of `group`'s rank (the caller starts or joins
    the group first: hearth.engine.worker). Without a group, one process holds the whole model."""
    folder = entry.path
    hf_config, tokenizer = model_config(entry), model_tokenizer(entry)
    limit = getattr(hf_config, "max_position_embeddings", None) or 4096
    max_model_len = min(x for x in (config.max_model_len, entry.max_model_len, limit) if x)
    reason = check_tensor_parallel(entry, config, hf_config)
    if group is None:
        if config.tensor_parallel_size > 1:
            raise ValueError(f"tensor_parallel_size={config.tensor_parallel_size}: load_model needs the rank's group")
        group = TensorParallelGroup.single(config.torch_device)
    try:
        return _load(entry, config, folder, hf_config, tokenizer, group, max_model_len, reason)
    except BaseException:
        if group.is_distributed:
            group.fail("loading the model failed")
            group.close()
        raise


def _load(entry: ModelEntry, config: EngineConfig, folder: Path, hf_config, tokenizer, group, max_model_len: int,
          reason: str | None) -> LoadedModel:
    device, dtype = group.device, config.torch_dtype
    weight_format = config.weight_format
    num_kv_heads = getattr(hf_config, "num_key_value_heads", None) or hf_config.num_attention_heads
    max_rank_kv_heads, rank_bytes = num_kv_heads, ()
    if reason is None:
        native = {}
        gguf = source_gguf(entry, folder)
        if gguf is not None:
            native = weight_format.gguf_values(gguf, hf_config.num_attention_heads, num_kv_heads)
            if native:
                logger.info("%s: %d projections loaded as they are from %s", weight_format.name, len(native), gguf.name)
        partition = LlamaPartition.build(LlamaShape.from_config(hf_config), group.rank, group.world_size,
                                         weight_format.group_size)
        with checkpoint(entry, folder, hf_config.num_attention_heads, num_kv_heads) as weights:
            model = LlamaModel.from_checkpoint(weights, hf_config, dtype, device, max_model_len + 1, weight_format,
                                               native, partition, group)
        if gguf is not None:
            log_rounded_tensors(gguf, weight_format, dtype, set(native), device)
        num_kv_heads, max_rank_kv_heads = partition.num_kv_heads, partition.max_kv_heads
        rank_bytes = tuple(group.all_gather_int(model.resident_weight_bytes()))
        if group.is_distributed:
            logger.info("rank %d of %d: query heads %s, KV heads %s, vocabulary %s; weight MiB by rank: %s",
                        group.rank, group.world_size, partition.q_heads, partition.kv_heads, partition.vocab,
                        [round(b / (1 << 20), 1) for b in rank_bytes])
        is_native = True
    else:
        from hearth.engine.model.models.hf_module import HFModule

        if weight_format.needs_native_forward:
            raise ValueError(f"quantization={weight_format.name} needs the native forward, which {entry.id!r} "
                             f"cannot use: {reason}")
        logger.warning("using transformers' module for %s: %s", entry.id, reason)
        model = HFModule.from_folder(folder, dtype, device, config=transformers_config(hf_config) if entry.is_gguf else None)
        is_native = False
    return LoadedModel(
        folder=folder,
        config=hf_config,
        tokenizer=tokenizer,
        model=model,
        is_native=is_native,
        eos_token_ids=eos_token_ids(entry, hf_config, tokenizer),
        max_model_len=max_model_len,
        vocab_size=hf_config.vocab_size,
        dtype=dtype,
        device=device,
        group=group,
        num_kv_heads=num_kv_heads,
        max_rank_kv_heads=max_rank_kv_heads,
        rank_weight_bytes=rank_bytes,
    )


def log_rounded_tensors(gguf: Path, weight_format, dtype: torch.dtype, packed: set[str],
                        device: torch.device | str = "cpu") -> None:
    """Warns, by type, of the quantized tensors `weight_format` rounds again from their float32 values (the
    ones it does not pack as they are): a served file is never re-quantized silently. The float32 torch
    path rounds nothing. Blocks are held as they are only in the C kernels' 8-bit records: elsewhere (a GPU,
    float32 activations, a CPU below avx2) aten's int8 per channel rounds them again."""
    from hearth.engine.loading.gguf_checkpoint import Q8_BLOCK_TYPES
    from hearth.engine.loading.gguf_file import FLOAT_TYPES, hf_name, tensor_types
    from hearth.engine.loading.gguf_weights import fused_group
    from hearth.engine.model.formats.placement import c_kernels_unavailable_reason

    if weight_format.is_exact_against_transformers and dtype == torch.float32:
        return
    rounded: dict[str, list[str]] = {}
    has_records = c_kernels_unavailable_reason(device, dtype) is None
    types = tensor_types(gguf)
    for name, kind in types.items():
        is_vocabulary = name in ("token_embd.weight", "output.weight")
        # Blocks go into 8-bit records as they are when the whole fused group has them (ShardedLayers).
        kept_as_blocks = has_records and weight_format.keeps_q8_0(is_vocabulary) and all(
            types.get(member) in Q8_BLOCK_TYPES for member in fused_group(name))
        if kind in FLOAT_TYPES or hf_name(name) in packed or kept_as_blocks:
            continue
        rounded.setdefault(kind, []).append(name)
    if rounded:
        logger.warning("%s rounds these %s tensors again from their float32 values: %s", weight_format.name, gguf.name,
                       "; ".join(f"{kind}: {len(names)} ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''})"
                                 for kind, names in rounded.items()))
