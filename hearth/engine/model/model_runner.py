"""Turns a scheduled step into model inputs, runs the forward and returns logits of the sampled rows.

Under tensor parallelism (hearth.engine.distributed) rank 0's runner broadcasts each step's inputs before running
the forward, and the other ranks' runners follow(): they receive those inputs and run the same forward, so
one scheduler (rank 0's) drives every rank. A failure after the broadcast is fatal to the group: the
ranks may be at different points of the step.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor

from hearth.engine.distributed.step import ChunkInput, decode_step, encode_step
from hearth.engine.loading.loader import LoadedModel
from hearth.engine.model.attention import (
    AttentionMetadata,
    PrefillSegment,
    RowContexts,
    calibrate_query_block,
    concat_decode_index,
    decode_groups,
    prefill_segment,
)
from hearth.engine.model.kv_cache import KVCache
from hearth.engine.scheduling.scheduler import ScheduledChunk

logger = logging.getLogger(__name__)


def row_attention_unavailable_reason(loaded: LoadedModel) -> str | None:
    """None when every row (decode and prefill) is attended by hearth.kernels.model.row_attention, else why SDPA attends
    them: the model's weight format says (hearth.engine.model.formats; the formats exact against transformers keep
    SDPA, whose lone decode row and short prompt are exact against it), where the kernel takes the shape and CPU."""
    if not loaded.is_native:
        return "the transformers fallback attends with its own modules"
    model = loaded.model
    return model.weight_format.row_attention_reason(model.num_heads, model.num_kv_heads, model.shape.head_dim,
                                                    model.dtype, loaded.device)


class ModelRunner:
    def __init__(self, loaded: LoadedModel, kv_cache: KVCache | None, block_size: int, prefill_chunk_size: int) -> None:
        self.loaded = loaded
        self.kv_cache = kv_cache
        self.block_size = block_size
        self.prefill_chunk_size = prefill_chunk_size
        self.device = loaded.device
        self.group = loaded.group
        reason = row_attention_unavailable_reason(loaded)
        self.attends_rows_alone = reason is None
        if loaded.is_native:
            logger.info("attention: %s", "hearth.kernels.model.row_attention, every row" if reason is None
                        else f"SDPA ({reason})")
            self.num_kv_heads = loaded.num_kv_heads  # this rank's
            model = loaded.model
            # Only SDPA's prefill geometry reads it: where the row kernel attends every row, nothing is measured.
            self.query_block = None if self.attends_rows_alone else calibrate_query_block(
                prefill_chunk_size, model.num_heads, model.num_kv_heads, model.shape.head_dim, model.dtype, self.device)

    def order(self, chunks: list[ScheduledChunk]) -> list[ScheduledChunk]:
        """Decode rows (one token) first, rows of one context length together, then the prefill chunks, as the
        attention metadata expects."""
        decodes = sorted((c for c in chunks if c.is_decode), key=lambda c: c.start + 1)
        return decodes + [c for c in chunks if not c.is_decode]

    @property
    def failure(self) -> str | None:
        """Why the tensor-parallel group can no longer run a forward; None while it can."""
        return self.group.failure

    def execute(self, chunks: list[ScheduledChunk], block_copies: list[tuple[int, int]]) -> Tensor:
        """Run `chunks` (in self.order) and return logits [num_sampled, vocab] of the sampled chunks."""
        if not self.loaded.is_native:
            return self._execute_hf(chunks)
        size = self.block_size
        inputs = [ChunkInput(c.seq.tokens_between(c.start, c.start + c.num_tokens), c.start,
                             c.seq.block_table[:-(-(c.start + c.num_tokens) // size)], c.is_decode, c.is_sampled)
                  for c in chunks]
        if not self.group.is_distributed:
            return self._run(inputs, block_copies)
        try:
            self.group.send_step(encode_step(inputs, block_copies))
            return self._run(inputs, block_copies)
        except Exception as exc:
            self.group.fail(f"step failed on rank 0: {exc}")
            raise

    def follow(self) -> None:
        """Ranks other than 0: run every step rank 0 broadcasts, until it stops the group."""
        while (payload := self.group.receive_step()) is not None:
            self._run(*decode_step(payload))

    def close(self) -> None:
        """Rank 0: stop the other ranks and leave the group (nothing to do with one rank)."""
        self.group.close()

    def _run(self, inputs: list[ChunkInput], block_copies: list[tuple[int, int]]) -> Tensor | None:
        if block_copies:
            self.kv_cache.copy_blocks(block_copies)
        input_ids, positions, md, sample_rows = self._prepare(inputs)
        hidden = self.loaded.model.forward(input_ids, positions, md, self.kv_cache)
        return self.loaded.model.compute_logits(hidden.index_select(0, sample_rows))

    def _execute_hf(self, chunks: list[ScheduledChunk]) -> Tensor:
        module = self.loaded.model
        logits = []
        for chunk in chunks:
            row = module.run_chunk(chunk.seq.seq_id, chunk.seq.tokens_between(chunk.start, chunk.start + chunk.num_tokens),
                                   chunk.start)
            if chunk.is_sampled:
                logits.append(row)
        return torch.stack(logits) if logits else torch.empty(0, self.loaded.vocab_size, device=self.device)

    def _prepare(self, chunks: list[ChunkInput]) -> tuple[Tensor, Tensor, AttentionMetadata, Tensor]:
        device = self.device
        size = self.block_size
        token_ids: list[int] = []
        positions: list[int] = []
        slot_mapping: list[int] = []
        sample_rows: list[int] = []
        decodes = [c for c in chunks if c.is_decode]
        prefills: list[PrefillSegment] = []
        row_tables: list[int] = []
        row_table_starts: list[int] = []
        for chunk in chunks:
            start, count, table = chunk.start, len(chunk.token_ids), chunk.block_table
            token_start = len(token_ids)
            token_ids.extend(chunk.token_ids)
            for pos in range(start, start + count):
                positions.append(pos)
                slot_mapping.append(table[pos // size] * size + pos % size)
            if chunk.is_sampled:
                sample_rows.append(len(token_ids) - 1)
            if self.attends_rows_alone:
                row_table_starts.extend([len(row_tables)] * count)
                row_tables.extend(table)
            elif not chunk.is_decode:
                prefills.append(prefill_segment(token_start, start, count, table, size, self.prefill_chunk_size,
                                                self.num_kv_heads, device, self.query_block))
        position_ids = torch.tensor(positions, dtype=torch.int64, device=device)
        groups = []
        row_contexts = None
        if row_table_starts:
            row_contexts = RowContexts(torch.tensor(row_tables, dtype=torch.int32, device=device),
                                       torch.tensor(row_table_starts, dtype=torch.int64, device=device),
                                       position_ids[:len(row_table_starts)], size)
        elif decodes:
            groups = decode_groups([(c.block_table, c.start + 1) for c in decodes], size, self.num_kv_heads, device)

        md = AttentionMetadata(
            slot_mapping=torch.tensor(slot_mapping, dtype=torch.int64, device=device),
            num_decode_tokens=len(decodes),
            decode_groups=groups,
            prefills=prefills,
            decode_index=concat_decode_index(groups),
            row_contexts=row_contexts,
        )
        return (
            torch.tensor(token_ids, dtype=torch.int64, device=device),
            position_ids,
            md,
            torch.tensor(sample_rows, dtype=torch.int64, device=device),
        )
