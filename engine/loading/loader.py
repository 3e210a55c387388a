"""Load a model entry: config, tokenizer and weights, natively when the architecture allows."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from engine.config import EngineConfig
from engine.loading.gguf_convert import MARKER, convert_gguf
from engine.loading.gguf_weights import read_gguf_q4
from engine.loading.quantization import Quantization
from engine.loading.registry import ModelEntry, cache_dir
from engine.model.models.llama import LlamaModel, supports_native

logger = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    folder: Path
    config: Any
    tokenizer: Any
    # LlamaModel (native) or engine.model.models.hf_module.HFModule (transformers' module).
    model: Any
    is_native: bool
    eos_token_ids: tuple[int, ...]
    max_model_len: int
    vocab_size: int
    dtype: torch.dtype
    device: torch.device


def hf_folder(entry: ModelEntry) -> Path:
    """The entry's HF folder; a .gguf entry is converted once into the cache."""
    if not entry.exists():
        raise FileNotFoundError(
            f"model {entry.id!r} not found at {entry.path} (run `make setup` or `python -m engine.loading.fetch` "
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
    """The GGUF file the model's weights came from, if it is still on disk (engine.loading.fetch keeps it)."""
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


def load_model(entry: ModelEntry, config: EngineConfig) -> LoadedModel:
    from transformers import AutoConfig, AutoTokenizer

    folder = hf_folder(entry)
    hf_config = AutoConfig.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    device = config.torch_device
    dtype = config.torch_dtype
    limit = getattr(hf_config, "max_position_embeddings", None) or 4096
    max_model_len = min(x for x in (config.max_model_len, entry.max_model_len, limit) if x)
    reason = supports_native(hf_config) if config.use_native_model else "native forward disabled"
    quantization = Quantization(config.quantization)
    if reason is None:
        native = {}
        gguf = source_gguf(entry, folder)
        if quantization.mode == "int4" and gguf is not None:
            native = read_gguf_q4(gguf, hf_config.num_attention_heads,
                                  getattr(hf_config, "num_key_value_heads", None) or hf_config.num_attention_heads)
            logger.info("int4: %d projections loaded as they are from %s", len(native), gguf.name)
        model = LlamaModel.from_folder(folder, hf_config, dtype, device, max_model_len + 1, quantization, native)
        is_native = True
    else:
        from engine.model.models.hf_module import HFModule

        if quantization.is_quantized:
            raise ValueError(f"quantization={quantization.mode} needs the native forward, which {entry.id!r} "
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
    )
