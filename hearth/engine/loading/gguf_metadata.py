"""The small Hugging Face folder a GGUF file's model needs beside its weights: config.json, the tokenizer
(with the chat template) and generation_config.json, all from the file's own metadata.

transformers builds both from a GGUF (`gguf_file=`), but parsing the file's token and merge arrays takes
seconds each time; written once under ~/.cache/hearth/gguf/ they load in a fraction of a second. No
weights are written: they are read from the file in place (hearth.engine.loading.gguf_checkpoint).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path

from hearth.engine.loading.registry import cache_dir

MARKER = "hearth-gguf.json"


def metadata_folder(gguf_path: Path) -> Path:
    """The folder of `gguf_path` (written on first use), keyed by the file's path, size and mtime."""
    gguf_path = Path(gguf_path)
    stat = gguf_path.stat()
    key = hashlib.sha256(f"{gguf_path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    folder = cache_dir() / "gguf" / f"{gguf_path.stem}-{key}"
    if not (folder / MARKER).is_file():
        write_metadata_folder(gguf_path, folder)
    return folder


def write_metadata_folder(gguf_path: Path, out_dir: Path) -> Path:
    """Config, tokenizer and generation config of `gguf_path` into `out_dir` (atomically)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    partial = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    # A folder of the file alone: transformers would read any tokenizer files beside it instead.
    with tempfile.TemporaryDirectory() as alone:
        (Path(alone) / gguf_path.name).symlink_to(gguf_path.resolve())
        tokenizer = AutoTokenizer.from_pretrained(alone, gguf_file=gguf_path.name)
        config = AutoConfig.from_pretrained(alone, gguf_file=gguf_path.name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    if not getattr(config, "architectures", None):
        config.architectures = [AutoModelForCausalLM._model_mapping[type(config)].__name__]
    tokenizer.save_pretrained(partial)
    config.save_pretrained(partial)
    eos_ids = sorted({i for i in (tokenizer.eos_token_id, config.eos_token_id) if i is not None})
    GenerationConfig(bos_token_id=config.bos_token_id, eos_token_id=eos_ids,
                     pad_token_id=config.pad_token_id).save_pretrained(partial)
    (partial / MARKER).write_text(json.dumps({"gguf": str(gguf_path.resolve()), "size": gguf_path.stat().st_size}))
    shutil.rmtree(out_dir, ignore_errors=True)
    partial.rename(out_dir)
    return out_dir


def written_bytes(folder: Path) -> int:
    """Bytes the folder holds on disk: what serving a GGUF wrote."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())
