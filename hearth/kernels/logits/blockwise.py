"""Row-wise selections that read the vocabulary once in blocks instead of sorting it.

The vocabulary of each row is cut into blocks of BLOCK_SIZE consecutive ids (the last one may be short).
The k largest values of a row lie in the k blocks with the largest maxima, so an exact top-k only needs
one pass of block maxima plus a top-k over k * BLOCK_SIZE gathered values. torch.topk and torch.argmax
over a whole 128k-token row were 10-20x slower than that on the CPU this project targets.
"""

from __future__ import annotations

import torch
from torch import Tensor

BLOCK_SIZE = 64


def _split_blocks(x: Tensor, block_size: int) -> tuple[Tensor, Tensor | None]:
    """x [num_seqs, vocab] -> full blocks [num_seqs, num_full_blocks, block_size] and the short tail."""
    num_seqs, vocab_size = x.shape
    num_full = vocab_size // block_size
    full = x.as_strided((num_seqs, num_full, block_size), (x.stride(0), block_size, 1))
    tail = x[:, num_full * block_size:] if vocab_size % block_size else None
    return full, tail


def block_reduce(x: Tensor, op: str, block_size: int = BLOCK_SIZE, dtype: torch.dtype | None = None) -> Tensor:
    """'max' or 'sum' of each block: [num_seqs, num_blocks]; sums accumulate in `dtype` when given."""
    if x.stride(-1) != 1:
        x = x.contiguous()
    full, tail = _split_blocks(x, block_size)
    if op == "max":
        parts = [full.amax(-1)] + ([tail.amax(-1, keepdim=True)] if tail is not None else [])
    else:
        parts = [full.sum(-1, dtype=dtype)] + ([tail.sum(-1, keepdim=True, dtype=dtype)] if tail is not None else [])
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


def gather_blocks(
    x: Tensor, block_ids: Tensor, block_size: int = BLOCK_SIZE, fill: float = float("-inf")
) -> tuple[Tensor, Tensor]:
    """Values and token ids of the chosen blocks: ([num_seqs, k * block_size], same), in id order.

    Positions past the end of the vocabulary (in a short last block) hold `fill` and repeat the last id.
    """
    vocab_size = x.shape[1]
    offsets = torch.arange(block_size, device=x.device)
    token_ids = (block_ids.unsqueeze(-1) * block_size + offsets).flatten(1)  # [num_seqs, k * block_size]
    if vocab_size % block_size == 0:
        return x.gather(1, token_ids), token_ids
    is_past_end = token_ids >= vocab_size
    token_ids = token_ids.clamp_(max=vocab_size - 1)
    values = x.gather(1, token_ids).masked_fill_(is_past_end, fill)
    return values, token_ids


def topk_blockwise(
    x: Tensor, k: int, block_size: int = BLOCK_SIZE, block_max: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Exact top-k of each row, sorted descending: (values [num_seqs, k], token ids [num_seqs, k]).

    block_max, when given, is x's block maxima (block_reduce(x, "max")), computed once for several uses.
    """
    vocab_size = x.shape[1]
    k = min(k, vocab_size)
    num_blocks = -(-vocab_size // block_size)
    if k * block_size * 2 >= vocab_size or k >= num_blocks:
        return torch.topk(x, k, dim=1)
    if block_max is None:
        block_max = block_reduce(x, "max", block_size)
    top_blocks = torch.topk(block_max, k, dim=1).indices
    values, token_ids = gather_blocks(x, top_blocks, block_size)
    top_values, top_pos = torch.topk(values, k, dim=1)
    return top_values, token_ids.gather(1, top_pos)


def argmax_blockwise(x: Tensor, block_size: int = BLOCK_SIZE, block_max: Tensor | None = None) -> Tensor:
    """Index of each row's maximum, the lowest id among ties: [num_seqs] int64."""
    if block_max is None:
        block_max = block_reduce(x, "max", block_size)
    # The first block reaching the row maximum holds the first occurrence of it.
    best_block = block_max.argmax(dim=1, keepdim=True)
    values, token_ids = gather_blocks(x, best_block, block_size)
    return token_ids.gather(1, values.argmax(dim=1, keepdim=True)).squeeze(1)


def refresh_block_max(block_max: Tensor, x: Tensor, token_ids: Tensor, block_size: int = BLOCK_SIZE) -> Tensor:
    """Block maxima of x, given those of a tensor that differs from x only at token_ids [num_seqs, M].

    Only the blocks holding those ids are read again: a few hundred blocks instead of the whole row.
    """
    blocks = token_ids // block_size
    values, _ = gather_blocks(x, blocks, block_size)
    maxima = values.view(*blocks.shape, block_size).amax(-1)
    # Repeated blocks write the same maximum.
    return block_max.scatter(1, blocks, maxima)
