"""The model and engine options shared by `python -m hearth.server` and `python -m hearth.server.batch`."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

from hearth.engine.config import EngineConfig
from hearth.engine.loading.registry import ModelEntry, ModelNotFoundError, ModelRegistry
from hearth.engine.model.formats import FORMAT_NAMES

if TYPE_CHECKING:
    from hearth.engine.llm_engine import LLMEngine


DEFAULT_REGISTRY = "models.yaml"


def add_engine_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", default=DEFAULT_REGISTRY, help=f"model registry file (default: {DEFAULT_REGISTRY}; "
                        "optional when --model is a path)")
    parser.add_argument("--model", default=None,
                        help="registry id or alias, or a path to a local HF folder or .gguf file (default: the registry's default)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: auto = cuda if available)")
    parser.add_argument("--dtype", default=None,
                        help="auto, bfloat16, float32 or float16 (default: the registry entry's, else auto = bfloat16)")
    parser.add_argument("--quantization", choices=FORMAT_NAMES, default=None,
                        help="linear weights: none (torch's kernels, exact against transformers), bf16 (the same "
                             "values on hearth's kernels), int8, int4 or mixed (default: the registry entry's; for a "
                             ".gguf what its types call for; else none); int4 loads a GGUF's 4-bit tensors as they "
                             "are, mixed those and 8-bit records for its finer ones")
    parser.add_argument("--max-model-len", type=int, default=None, help="cap on prompt + completion tokens")
    parser.add_argument("--kv-cache-memory-gib", type=float, default=2.0, help="KV cache budget in GiB (default: 2)")
    parser.add_argument("--max-num-seqs", type=int, default=64, help="most sequences decoded at once (default: 64)")
    parser.add_argument("--max-num-batched-tokens", type=int, default=1024, help="token budget of one step (default: 1024)")
    parser.add_argument("--prefill-chunk-size", type=int, default=128,
                        help="prompt tokens per prefill chunk, and the granularity of prefix-cache hits (default: 128)")
    parser.add_argument("--prefix-caching", action=argparse.BooleanOptionalAction, default=True,
                        help="reuse the KV of prompt prefixes seen before (default: on; --no-prefix-caching: off)")
    parser.add_argument("--logprobs-mode", choices=("raw", "processed"), default="raw",
                        help="logprobs of the raw model distribution (default) or of the processed one")
    parser.add_argument("--tensor-parallel-size", type=int, default=None, metavar="N",
                        help="shard the model over N ranks (default: 1, or torchrun's WORLD_SIZE); on one host "
                             "the server spawns them itself; --kv-cache-memory-gib is per rank")
    parser.add_argument("--distributed-backend", choices=("auto", "gloo", "nccl"), default="auto",
                        help="torch.distributed backend of the ranks (default: auto = nccl on CUDA, gloo on CPU)")


def resolve_entry(args: argparse.Namespace) -> ModelEntry:
    """The registry entry (or local path) the options name; ModelNotFoundError when its weights are absent."""
    if Path(args.models).is_file() or args.models != DEFAULT_REGISTRY:
        registry = ModelRegistry.load(args.models)
    elif args.model is None:
        raise ModelNotFoundError(f"no {DEFAULT_REGISTRY} here: pass --model (a local HF folder or .gguf file) or "
                                 "--models FILE")
    else:  # a path needs no registry: `hearth serve --model ~/models/x.gguf` from any directory
        registry = ModelRegistry(entries=())
    entry = registry.resolve(args.model)
    if not entry.exists():
        raise ModelNotFoundError(
            f"model {entry.id!r} is not at {entry.path}; run `make setup` (or `hearth fetch`) first"
        )
    return entry


def engine_config(args: argparse.Namespace, entry: ModelEntry) -> EngineConfig:
    return EngineConfig(
        model_path=str(entry.path),
        dtype=args.dtype or entry.dtype,
        quantization=args.quantization or entry.serving_format(),
        device=args.device,
        max_model_len=args.max_model_len,
        kv_cache_memory_gib=args.kv_cache_memory_gib,
        max_num_seqs=args.max_num_seqs,
        max_num_batched_tokens=args.max_num_batched_tokens,
        prefill_chunk_size=args.prefill_chunk_size,
        logprobs_mode=args.logprobs_mode,
        enable_prefix_caching=args.prefix_caching,
        tensor_parallel_size=args.tensor_parallel_size or int(os.environ.get("WORLD_SIZE", 1)),
        distributed_backend=args.distributed_backend,
    )


def start_engine(args: argparse.Namespace, entry: ModelEntry) -> LLMEngine:
    """The engine the arguments describe. Under torchrun, ranks other than 0 do not get one: they run the
    forward of the steps rank 0 broadcasts, neither serving nor reading input, and exit with their status
    (SystemExit) once rank 0 stops them. Raises ValueError for arguments the engine refuses."""
    from hearth.engine.distributed.launch import torchrun_config
    from hearth.engine.llm_engine import LLMEngine
    from hearth.engine.worker import run_worker

    config = engine_config(args, entry)
    if config.tensor_parallel_size > 1:
        group_config = torchrun_config(config)
        if group_config is not None and group_config.rank != 0:
            raise SystemExit(run_worker(config, entry, group_config))
    return LLMEngine(config, entry)
