"""Shape twin: a random-weight Llama of any config's shape, saved as an HF folder that hearth loads.

Throughput does not depend on the weight values, and a real 8B checkpoint cannot travel to the device (64 MiB
a call) nor be downloaded there. So this builds one on the spot from a config.json: the default model's
(~/.cache/hearth/models/SmolLM2-135M-Instruct, the default) or benchmarks/configs/llama-3.1-8b.json.

What the folder holds: config.json (the source config; dtype bfloat16; bos/eos/pad set to the copied
tokenizer's, so that the ids the engine stops on exist), model*.safetensors (bf16, N(0, initializer_range),
norms 1; sharded with an index past --shard-gib), the default model's tokenizer and chat template (small), a
generation_config.json and a models.yaml naming it (`python -m hearth.server --models DIR/models.yaml`, or
`--model DIR`). A vocabulary larger than the tokenizer's (128256 against 49152) keeps the shape: ids past the
tokenizer decode to no text, so count tokens by usage, and generate with EOS ignored (bench_serving.py
--ignore-eos sends min_tokens = max_tokens).

Usage: python benchmarks/shape_twin.py --config benchmarks/configs/llama-3.1-8b.json --out /tmp/twin-8b
       [--device cuda] [--layers N] [--max-model-len 4096] [--seed 0] [--shard-gib 4]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

HEARTH_CACHE = Path(os.environ.get("HEARTH_CACHE", Path.home() / ".cache" / "hearth"))
DEFAULT_MODEL = HEARTH_CACHE / "models" / "SmolLM2-135M-Instruct"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")


def read_config(path: Path) -> dict:
    """A config.json, or the one in a model folder."""
    path = Path(path)
    return json.loads((path / "config.json" if path.is_dir() else path).read_text())


def weight_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    """HF LlamaForCausalLM tensor names -> shapes for `config`."""
    hidden, inter = config["hidden_size"], config["intermediate_size"]
    heads = config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads") or heads
    head_dim = config.get("head_dim") or hidden // heads
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (config["vocab_size"], hidden)}
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes |= {
            p + "input_layernorm.weight": (hidden,),
            p + "self_attn.q_proj.weight": (heads * head_dim, hidden),
            p + "self_attn.k_proj.weight": (kv_heads * head_dim, hidden),
            p + "self_attn.v_proj.weight": (kv_heads * head_dim, hidden),
            p + "self_attn.o_proj.weight": (hidden, heads * head_dim),
            p + "post_attention_layernorm.weight": (hidden,),
            p + "mlp.gate_proj.weight": (inter, hidden),
            p + "mlp.up_proj.weight": (inter, hidden),
            p + "mlp.down_proj.weight": (hidden, inter),
        }
        if config.get("attention_bias"):
            for n, rows in (("q", heads), ("k", kv_heads), ("v", kv_heads)):
                shapes[p + f"self_attn.{n}_proj.bias"] = (rows * head_dim,)
    shapes["model.norm.weight"] = (hidden,)
    if not config.get("tie_word_embeddings", False):
        shapes["lm_head.weight"] = (config["vocab_size"], hidden)
    return shapes


def random_tensor(name: str, shape: tuple[int, ...], std: float, generator: torch.Generator,
                  device: torch.device) -> torch.Tensor:
    """Norm weights 1, biases 0, others N(0, std); bf16 on the CPU (as safetensors saves them)."""
    if name.endswith("norm.weight"):
        return torch.ones(shape, dtype=torch.bfloat16)
    if name.endswith(".bias"):
        return torch.zeros(shape, dtype=torch.bfloat16)
    values = torch.empty(shape, dtype=torch.float32, device=device).normal_(0.0, std, generator=generator)
    return values.to(torch.bfloat16).cpu()


def twin_config(source: dict, tokenizer_from: Path, layers: int | None) -> dict:
    config = {k: v for k, v in source.items() if not k.startswith("_")}
    if layers is not None:
        config["num_hidden_layers"] = layers
    tokens = read_config(tokenizer_from) if (tokenizer_from / "config.json").is_file() else {}
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        if key in tokens:
            config[key] = tokens[key]
    config["dtype"] = "bfloat16"
    config.pop("torch_dtype", None)
    config.setdefault("architectures", ["LlamaForCausalLM"])
    config.setdefault("model_type", "llama")
    return config


def build(config_path: Path, out: Path, tokenizer_from: Path = DEFAULT_MODEL, layers: int | None = None,
          device: str = "cpu", seed: int = 0, shard_gib: float = 4.0, max_model_len: int = 4096,
          name: str | None = None) -> Path:
    """Write the twin into `out` (created); returns it."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config = twin_config(read_config(config_path), Path(tokenizer_from), layers)
    torch_device = torch.device(device)
    generator = torch.Generator(device=torch_device).manual_seed(seed)
    std = float(config.get("initializer_range", 0.02))
    # Shards are written as they fill, so the host holds one at a time (4 GiB), not the whole model.
    shapes = weight_shapes(config)
    limit = shard_gib * 2**30
    groups: list[list[str]] = [[]]
    size = 0
    for tensor_name, shape in shapes.items():
        nbytes = 2 * int(torch.tensor(shape).prod())
        if groups[-1] and size + nbytes > limit:
            groups.append([])
            size = 0
        groups[-1].append(tensor_name)
        size += nbytes
    weight_map, total = {}, 0
    for index, names in enumerate(groups):
        file = "model.safetensors" if len(groups) == 1 else f"model-{index + 1:05d}-of-{len(groups):05d}.safetensors"
        shard = {n: random_tensor(n, shapes[n], std, generator, torch_device) for n in names}
        save_file(shard, str(out / file), metadata={"format": "pt"})
        total += sum(t.numel() * t.element_size() for t in shard.values())
        weight_map |= dict.fromkeys(names, file)
    if len(groups) > 1:
        index_json = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (out / "model.safetensors.index.json").write_text(json.dumps(index_json, indent=1))
    (out / "config.json").write_text(json.dumps(config, indent=2))
    for file in TOKENIZER_FILES:
        if (Path(tokenizer_from) / file).is_file():
            shutil.copy(Path(tokenizer_from) / file, out / file)
    generation = {k: config[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if k in config}
    (out / "generation_config.json").write_text(json.dumps(generation, indent=2))
    model_id = name or f"twin-{out.name}"
    (out / "models.yaml").write_text(
        f"# A random-weight shape twin (benchmarks/shape_twin.py): for throughput only.\ndefault: {model_id}\n"
        f"models:\n  - id: {model_id}\n    path: {out.resolve()}\n    dtype: bfloat16\n    quantization: none\n"
        f"    max_model_len: {max_model_len}\n")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=DEFAULT_MODEL, help="config.json or a model folder")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tokenizer-from", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--layers", type=int, default=None, help="override num_hidden_layers")
    parser.add_argument("--device", default="cpu", help="where the random values are drawn (cuda is faster)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shard-gib", type=float, default=4.0)
    parser.add_argument("--max-model-len", type=int, default=4096, help="for the models.yaml entry")
    parser.add_argument("--name", default=None, help="model id in models.yaml (default: twin-<out name>)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    out = build(args.config, args.out, args.tokenizer_from, args.layers, args.device, args.seed, args.shard_gib,
                args.max_model_len, args.name)
    num_bytes = sum(f.stat().st_size for f in out.glob("*.safetensors"))
    print(f"shape twin of {args.config} in {out}: {num_bytes / 2**30:.2f} GiB of bf16 weights, "
          f"{time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
