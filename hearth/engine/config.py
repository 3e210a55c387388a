"""Engine configuration: one frozen dataclass, validated on construction."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hearth.engine.model.formats import WeightFormat, parse_format

DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32, "float16": torch.float16}
DTYPE_ALIASES = {"bf16": "bfloat16", "fp32": "float32", "fp16": "float16", "half": "float16", "float": "float32"}
LOGPROBS_MODES = ("raw", "processed")
# auto: gloo on CPU, nccl on CUDA (hearth.engine.distributed.group.choose_backend).
DISTRIBUTED_BACKENDS = ("auto", "gloo", "nccl")
# One host's ranks are processes; more than this is a typo, not a machine.
MAX_TENSOR_PARALLEL_SIZE = 1024


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """'auto' is bfloat16 on both CPU and CUDA.

    On this project's CPUs (AVX512-BF16) bf16 GEMMs ran 2-3x faster than fp32 and gave the same rows
    whatever the batch size, while fp32 MKL GEMMs changed rows when fewer than 8 rows were batched
    (docs/weights-and-kernels.md, 'Choice of dtype').
    """
    name = DTYPE_ALIASES.get(dtype, dtype)
    if name == "auto":
        return torch.bfloat16
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of auto, {', '.join(DTYPES)}; got {dtype!r}")
    return DTYPES[name]


@dataclass(frozen=True)
class EngineConfig:
    model_path: str
    dtype: str = "auto"
    device: str = "auto"
    max_model_len: int | None = None
    kv_cache_memory_gib: float = 2.0
    block_size: int = 16
    max_num_seqs: int = 64
    max_num_batched_tokens: int = 1024
    # Prefill geometry unit (hearth.engine.model.attention): a short last chunk attends over the whole chunk's rows;
    # 128 costs ~4% on a cold 1,000-token prefill against 512 (docs/performance.md).
    prefill_chunk_size: int = 128
    logprobs_mode: str = "raw"
    use_native_model: bool = True
    # Linear weights: none (as loaded, torch kernels), bf16 (hearth kernels), int8 or int4: the name of a weight
    # format (hearth.engine.model.formats), its object is weight_format.
    quantization: str = "none"
    # Reuse the KV of prompt prefixes seen before (hearth.engine.scheduling.prefix_cache); native forward only.
    enable_prefix_caching: bool = True
    # Ranks the native forward is sharded over (hearth.engine.distributed); 1 = one process, no torch.distributed.
    tensor_parallel_size: int = 1
    distributed_backend: str = "auto"

    def __post_init__(self) -> None:
        if not self.model_path:
            raise ValueError("model_path must be a non-empty path")
        if self.max_model_len is not None and self.max_model_len < 1:
            raise ValueError(f"max_model_len must be >= 1, got {self.max_model_len}")
        if not 0 < self.kv_cache_memory_gib <= 1024:
            raise ValueError(f"kv_cache_memory_gib must be in (0, 1024], got {self.kv_cache_memory_gib}")
        if self.block_size < 1 or self.block_size & (self.block_size - 1):
            raise ValueError(f"block_size must be a power of two >= 1, got {self.block_size}")
        if self.max_num_seqs < 1:
            raise ValueError(f"max_num_seqs must be >= 1, got {self.max_num_seqs}")
        if self.prefill_chunk_size < 1:
            raise ValueError(f"prefill_chunk_size must be >= 1, got {self.prefill_chunk_size}")
        if self.max_num_batched_tokens < self.prefill_chunk_size:
            raise ValueError(
                "max_num_batched_tokens must be >= prefill_chunk_size "
                f"({self.prefill_chunk_size}), got {self.max_num_batched_tokens}"
            )
        if self.logprobs_mode not in LOGPROBS_MODES:
            raise ValueError(f"logprobs_mode must be one of {LOGPROBS_MODES}, got {self.logprobs_mode!r}")
        if not 1 <= self.tensor_parallel_size <= MAX_TENSOR_PARALLEL_SIZE:
            raise ValueError(f"tensor_parallel_size must be in [1, {MAX_TENSOR_PARALLEL_SIZE}], "
                             f"got {self.tensor_parallel_size}")
        if self.distributed_backend not in DISTRIBUTED_BACKENDS:
            raise ValueError(f"distributed_backend must be one of {DISTRIBUTED_BACKENDS}, got {self.distributed_backend!r}")
        resolve_dtype(self.dtype, torch.device("cpu"))
        self.weight_format  # noqa: B018  (parsed here, so a bad name is refused at construction)

    @property
    def weight_format(self) -> WeightFormat:
        """The one object `quantization` names (parse_format gives the same object for the same name)."""
        return parse_format(self.quantization)

    @property
    def torch_device(self) -> torch.device:
        return resolve_device(self.device)

    @property
    def torch_dtype(self) -> torch.dtype:
        return resolve_dtype(self.dtype, self.torch_device)
