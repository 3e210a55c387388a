"""One step's forward inputs as a flat int64 tensor, so rank 0 can broadcast them to the other ranks.

Rank 0 schedules; the other ranks only need what the forward reads: per chunk its tokens, first position,
block table (as far as the chunk reaches), whether it is a decode row and whether its last row is
sampled, plus the step's
copy-on-write block copies. Each rank builds its own attention metadata from them (its cache holds its
own KV heads, so cache row indices differ by rank).

Layout: [num_copies, (src, dst) * num_copies, num_chunks, then per chunk: start, is_decode, is_sampled,
num_tokens, num_blocks, tokens..., blocks...].
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


class ChunkInput(NamedTuple):
    token_ids: list[int]
    # Position of token_ids[0] in its sequence.
    start: int
    # The sequence's blocks covering positions [0, start + len(token_ids)).
    block_table: list[int]
    # One output token attended as a decode row (hearth.engine.scheduling.scheduler.ScheduledChunk.is_decode).
    is_decode: bool
    is_sampled: bool


def encode_step(chunks: list[ChunkInput], block_copies: list[tuple[int, int]]) -> Tensor:
    values = [len(block_copies)]
    for src, dst in block_copies:
        values += [src, dst]
    values.append(len(chunks))
    for chunk in chunks:
        values += [chunk.start, int(chunk.is_decode), int(chunk.is_sampled), len(chunk.token_ids),
                   len(chunk.block_table)]
        values += chunk.token_ids
        values += chunk.block_table
    return torch.tensor(values, dtype=torch.int64)


def decode_step(payload: Tensor) -> tuple[list[ChunkInput], list[tuple[int, int]]]:
    values = payload.tolist()
    num_copies = values[0]
    copies = [(values[1 + 2 * i], values[2 + 2 * i]) for i in range(num_copies)]
    at = 1 + 2 * num_copies
    num_chunks = values[at]
    at += 1
    chunks = []
    for _ in range(num_chunks):
        start, is_decode, is_sampled, num_tokens, num_blocks = values[at:at + 5]
        at += 5
        tokens = values[at:at + num_tokens]
        at += num_tokens
        blocks = values[at:at + num_blocks]
        at += num_blocks
        chunks.append(ChunkInput(tokens, start, blocks, bool(is_decode), bool(is_sampled)))
    if at != len(values):
        raise ValueError(f"step payload has {len(values) - at} values past its last chunk")
    return chunks, copies
