"""Convert a GGUF file once into a cached Hugging Face folder (safetensors + config + tokenizer).

transformers reads GGUF (dequantizing to float32) but refuses to `save_pretrained` a GGUF-loaded model,
so the model is rebuilt from its config without `quantization_config` and given the state dict.
Weights are stored in float32: dequantized GGUF values are exact in float32 and not in bfloat16; the
engine casts to its run dtype at load.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from tqdm import tqdm

MARKER = "hearth-converted.json"


def converted_from(folder: Path) -> Path | None:
    """The GGUF file a converted folder's marker names (relative to the folder, or absolute), if it is on disk."""
    marker = Path(folder) / MARKER
    if not marker.is_file():
        return None
    path = Path(folder) / json.loads(marker.read_text()).get("gguf", "")
    return path if path.is_file() and path.suffix == ".gguf" else None


def convert_gguf(gguf_path: Path, out_dir: Path) -> Path:
    """Write an HF folder for `gguf_path` at `out_dir` (atomically); returns out_dir."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    gguf_path = Path(gguf_path)
    out_dir = Path(out_dir)
    if not gguf_path.is_file():
        raise FileNotFoundError(f"GGUF file not found: {gguf_path}")
    tmp_dir = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp_dir, ignore_errors=True)
    tmp_dir.mkdir(parents=True)
    folder, name = str(gguf_path.parent), gguf_path.name
    steps = tqdm(total=4, desc=f"converting {name}", unit="step")

    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    tokenizer.save_pretrained(tmp_dir)
    steps.update()

    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.architectures = [type(AutoModelForCausalLM.from_config(config, dtype=torch.float32)).__name__]
    steps.update()

    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    state_dict = loaded.state_dict()
    del loaded
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(state_dict, assign=True)
    model.tie_weights()
    steps.update()

    model.save_pretrained(tmp_dir, safe_serialization=True)
    eos_ids = sorted({i for i in (tokenizer.eos_token_id, config.eos_token_id) if i is not None})
    GenerationConfig(
        bos_token_id=config.bos_token_id, eos_token_id=eos_ids, pad_token_id=config.pad_token_id
    ).save_pretrained(tmp_dir)
    (tmp_dir / MARKER).write_text(json.dumps({"gguf": str(gguf_path), "size": gguf_path.stat().st_size}))
    steps.update()
    steps.close()

    if out_dir.is_dir():
        # The folder may hold the GGUF itself (a .gguf entry's reference folder, hearth.engine.loading.fetch):
        # only the converted files are replaced, the marker last.
        for path in sorted(tmp_dir.iterdir(), key=lambda p: p.name == MARKER):
            path.replace(out_dir / path.name)
        tmp_dir.rmdir()
    else:
        tmp_dir.rename(out_dir)
    return out_dir
