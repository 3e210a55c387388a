"""The paged KV cache: one tensor holding every layer's keys and values in fixed-size blocks."""

from __future__ import annotations

import math
import mmap

import torch
from torch import Tensor


def bytes_per_block(num_layers: int, block_size: int, num_kv_heads: int, head_dim: int, dtype: torch.dtype) -> int:
    return 2 * num_layers * block_size * num_kv_heads * head_dim * torch.empty((), dtype=dtype).element_size()


def num_cache_blocks(memory_gib: float, num_layers: int, block_size: int, num_kv_heads: int, head_dim: int,
                     dtype: torch.dtype) -> int:
    """Blocks that fit `memory_gib` of one process's cache. Under tensor parallelism every rank passes the
    most KV heads any rank holds, so that all ranks get the same number of blocks (rank 0's block tables
    index every rank's cache)."""
    return int(memory_gib * (1 << 30)) // bytes_per_block(num_layers, block_size, num_kv_heads, head_dim, dtype)


def zeroed(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
    """A zero tensor. On the CPU it is an anonymous mapping, which the OS zeroes page by page as it is first
    touched: a cache of gigabytes costs nothing at start (torch.zeros writes every page, seconds for 2 GiB on a
    small machine), and only the blocks in use become resident."""
    if torch.device(device).type != "cpu":
        return torch.zeros(shape, dtype=dtype, device=device)
    count = math.prod(shape)
    if count == 0:
        return torch.zeros(shape, dtype=dtype)
    pages = mmap.mmap(-1, count * torch.empty((), dtype=dtype).element_size())
    return torch.frombuffer(pages, dtype=dtype, count=count).view(shape)


class KVCache:
    """data [num_layers, num_blocks * block_size, 2, num_kv_heads, head_dim]; a token's slot is
    block * block_size + offset, and its key and value sit side by side so one gather reads both. Where
    hearth.kernels.model.row_attention attends (int8/int4), each block's bytes are instead laid out as that kernel keeps
    them (hearth.kernels.model.row_attention.is_tiled_layout) and written only through it; blocks stay whole, so
    copy_blocks holds either way. Zero-initialised so that padded reads stay finite."""

    def __init__(
        self,
        num_layers: int,
        num_blocks: int,
        block_size: int,
        num_kv_heads: int,
        head_dim: int,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        self.num_blocks = num_blocks
        self.block_size = block_size
        shape = (num_layers, num_blocks * block_size, 2, num_kv_heads, head_dim)
        self.data = zeroed(shape, dtype, device)

    def layer(self, index: int) -> Tensor:
        """One layer's [num_slots, 2, num_kv_heads, head_dim]: keys at [:, 0], values at [:, 1]."""
        return self.data[index]

    def copy_blocks(self, copies: list[tuple[int, int]]) -> None:
        """Copy whole blocks src -> dst in every layer (copy-on-write of a shared partial block)."""
        size = self.block_size
        for src, dst in copies:
            self.data[:, dst * size:(dst + 1) * size] = self.data[:, src * size:(src + 1) * size]
