"""Load a model entry: config, tokenizer and weights, natively when the architecture allows."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hearth.engine.config import EngineConfig
from hearth.engine.distributed.group import TensorParallelGroup
from hearth.engine.distributed.sharding import LlamaPartition
from hearth.engine.loading.gguf_convert import MARKER, convert_gguf
from hearth.engine.loading.registry import ModelEntry, cache_dir
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


def hf_folder(entry: ModelEntry) -> Path:
    """The entry's HF folder; a .gguf entry is converted once into the cache."""
    if not entry.exists():
        raise FileNotFoundError(
            f"model {entry.id!r} not found at {entry.path} (run `make setup` or `python -m hearth.engine.loading.fetch` "
            "for registry models with a source)"
        )
    if not entry.is_gguf:
        return entry.path
    stat = entry.path.stat()
    key = hashlib.sha256(f"{entry.path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    folder = cache_dir() / "converted" / f"{entry.path.stem}-{key}"
    if not (folder / "config.json").is_file():
        convert_gguf(entry.path, folder)
    return folder


def source_gguf(entry: ModelEntry, folder: Path) -> Path | None:
    """The GGUF file the model's weights came from, if it is still on disk (hearth.engine.loading.fetch keeps it)."""
    if entry.is_gguf:
        return entry.path
    marker = folder / MARKER
    if not marker.is_file():
        return None
    path = folder / json.loads(marker.read_text()).get("gguf", "")
    return path if path.is_file() and path.suffix == ".gguf" else None


def eos_token_ids(config, tokenizer, folder: Path) -> tuple[int, ...]:
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
        from transformers import AutoConfig

        hf_config = AutoConfig.from_pretrained(hf_folder(entry))
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
    from transformers import AutoConfig, AutoTokenizer

    folder = hf_folder(entry)
    hf_config = AutoConfig.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
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
        model = LlamaModel.from_folder(folder, hf_config, dtype, device, max_model_len + 1, weight_format, native,
                                       partition, group)
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
        model = HFModule.from_folder(folder, dtype, device)
        is_native = False
    return LoadedModel(
        folder=folder,
        config=hf_config,
        tokenizer=tokenizer,
        model=model,
        is_native=is_native,
        eos_token_ids=eos_token_ids(hf_config, tokenizer, folder),
        max_model_len=max_model_len,
        vocab_size=hf_config.vocab_size,
        dtype=dtype,
        device=device,
        group=group,
        num_kv_heads=num_kv_heads,
        max_rank_kv_heads=max_rank_kv_heads,
        rank_weight_bytes=rank_bytes,
    )
