"""What a process builds to run the model: its tensor-parallel group, its shard and its KV cache.

Above loading, model and distributed, so that none of them imports upwards: the ranks' start
(hearth.engine.distributed.launch) is handed `run_worker` as the entry of the ranks it spawns, and the
loader is handed the group it loads a shard for.
"""

from __future__ import annotations

import logging

from hearth.engine.config import EngineConfig
from hearth.engine.distributed.group import GroupConfig, TensorParallelGroup
from hearth.engine.distributed.launch import join_group, start_group
from hearth.engine.loading.loader import LoadedModel, check_tensor_parallel, load_model
from hearth.engine.loading.registry import ModelEntry
from hearth.engine.model.kv_cache import KVCache, num_cache_blocks
from hearth.engine.model.model_runner import ModelRunner

logger = logging.getLogger(__name__)


def open_group(config: EngineConfig, entry: ModelEntry) -> TensorParallelGroup:
    """This process's group as rank 0 (or a group of one): spawned ranks run run_worker. A model that cannot be
    sharded is refused before any rank starts."""
    if config.tensor_parallel_size > 1:
        check_tensor_parallel(entry, config)
    return start_group(config, entry, run_worker)


def sized_kv_cache(config: EngineConfig, loaded: LoadedModel) -> tuple[int, KVCache | None]:
    """(blocks, this process's cache) for `config.kv_cache_memory_gib`. Every rank sizes by the most KV heads
    any rank holds, so all ranks get the same number of blocks (rank 0's block tables index every rank's
    cache). The transformers fallback keeps its own per-sequence cache: no KVCache then."""
    hf = loaded.config
    head_dim = getattr(hf, "head_dim", None) or hf.hidden_size // hf.num_attention_heads
    num_blocks = num_cache_blocks(config.kv_cache_memory_gib, hf.num_hidden_layers, config.block_size,
                                  loaded.max_rank_kv_heads, head_dim, loaded.dtype)
    if not loaded.is_native:
        return num_blocks, None
    return num_blocks, KVCache(hf.num_hidden_layers, num_blocks, config.block_size, loaded.num_kv_heads, head_dim,
                               loaded.dtype, loaded.device)


def run_worker(config: EngineConfig, entry: ModelEntry, group_config: GroupConfig | None = None) -> int:
    """A rank other than 0: join the group, load this rank's shard and KV cache, then run the forward of
    every step rank 0 broadcasts until it stops the group. Returns the exit status (0: stopped by rank 0)."""
    group = join_group(config, group_config)
    try:
        loaded = load_model(entry, config, group)
        _, kv_cache = sized_kv_cache(config, loaded)
        ModelRunner(loaded, kv_cache, config.block_size, config.prefill_chunk_size).follow()
    except Exception:
        logger.exception("rank %d failed", group.rank)
        return 1
    group.close()
    return 0
