"""A rank's layers: column- and row-parallel linears built from its slices, and the vocab-parallel embedding.

The linears themselves are hearth.engine.model.linear's (dense, int8, int4), built by a LinearFactory (the model's
weight format, hearth.engine.model.formats) from the rank's slice of each weight: a sharded layer is an ordinary
layer of a smaller shape, calibrated for batch invariance like any other (hearth.engine.model.row_tiling). What makes it parallel is where its slice comes from
and what follows it:
- column-parallel (q/k/v, gate/up): output rows of the rank's heads / features; nothing follows, the
  output stays split (attention and SiLU(gate) * up are per head / per feature);
- row-parallel (o, down): the matching input columns; the partial sums are added by one all-reduce
  (TensorParallelGroup.all_reduce) after the layer.
Quantized modes shard before quantizing: int4 groups of inputs are whole groups of the unsharded weight
(splits fall between groups), so int4 weights are those of one rank; int8 scales are per output row, so a
row-parallel layer's scales come from its own columns (at least as fine as one rank's). 4-bit GGUF
tensors are sliced as they are, without a float round trip.
"""

from __future__ import annotations

import torch
from torch import Tensor

from hearth.engine.loading.gguf_weights import Q4Tensor
from hearth.engine.model.embedding import Embedding
from hearth.engine.model.formats.values import Q8Blocks
from hearth.engine.model.linear import Linear
from hearth.engine.model.linear_factory import LinearFactory

from .group import TensorParallelGroup
from .sharding import CheckpointReader

Range = tuple[int, int]


class VocabParallelEmbedding:
    """Rows [vocab[0], vocab[1]) of the embedding table: a token outside them looks up zeros, and the
    all-reduce adds the one rank's row to zeros, so every rank gets the unsharded row bit for bit."""

    def __init__(self, local: Embedding, vocab: Range, group: TensorParallelGroup) -> None:
        self.local, self.vocab, self.group = local, vocab, group

    @property
    def shares_head(self) -> bool:
        return self.local.shares_head

    @property
    def num_bytes(self) -> int:
        return self.local.num_bytes

    def lookup(self, token_ids: Tensor) -> Tensor:
        start, stop = self.vocab
        inside = (token_ids >= start) & (token_ids < stop)
        rows = self.local.lookup(torch.where(inside, token_ids - start, 0))
        return self.group.all_reduce(rows.masked_fill(~inside[:, None], 0))


class ShardedLayers:
    """Builds a rank's layers from a checkpoint, reading only its slices; 4-bit GGUF tensors in `native`
    are used as they are. Tracks the names read, so unused checkpoint weights are reported."""

    def __init__(self, reader: CheckpointReader, native: dict[str, Q4Tensor], factory: LinearFactory,
                 group: TensorParallelGroup) -> None:
        self.reader, self.native, self.factory, self.group = reader, dict(native), factory, group
        self.dtype, self.device = factory.dtype, factory.device
        self._used: set[str] = set()

    def tensor(self, name: str, rows: Range | None = None, cols: Range | None = None) -> Tensor:
        """The stored tensor (its stored dtype), or its rows / columns, on the device."""
        self._used.add(name)
        return self.reader.read(name, rows, cols).to(self.device)

    def vector(self, name: str, rows: Range | None = None) -> Tensor:
        """A norm weight or bias, in the model dtype."""
        return self.tensor(name, rows).to(self.dtype).contiguous()

    def column(self, parts: list[tuple[str, Range]], bias: bool = False) -> Linear:
        """Column-parallel: rows `range` of each `name`.weight, fused in order (q, k, v or gate, up)."""
        names = [f"{name}.weight" for name, _ in parts]
        biases = torch.cat([self.vector(f"{name}.bias", rows) for name, rows in parts]) if bias else None
        if all(n in self.native for n in names):
            return self.factory.from_values([self._native(n).rows(*rows) for n, (_, rows) in zip(names, parts, strict=True)],
                                            biases)
        if any(n in self.native for n in names):
            raise ValueError(f"weights {names} are partly 4-bit in the GGUF; the native loader needs all or none")
        blocks = self._q8_blocks([(n, rows, None) for n, (_, rows) in zip(names, parts, strict=True)])
        weight = blocks or torch.cat([self.tensor(n, rows) for n, (_, rows) in zip(names, parts, strict=True)])
        return self.factory.linear(weight, biases, source_bits=self._source_bits(names))

    def row(self, name: str, cols: Range) -> Linear:
        """Row-parallel: columns `cols` of `name`.weight; its output is a partial sum over the ranks, added
        to the residual stream."""
        weight = f"{name}.weight"
        if weight in self.native:
            return self.factory.from_values([self._native(weight).cols(*cols)], None, adds_to_residual=True)
        values = self._q8_blocks([(weight, None, cols)]) or self.tensor(weight, cols=cols)
        return self.factory.linear(values, None, adds_to_residual=True, source_bits=self._source_bits([weight]))

    def embedding_and_head(self, vocab: Range, is_tied: bool):
        """The embedding and lm_head over vocabulary rows `vocab` (tied: one table serves both)."""
        names = self.reader.names()
        is_tied = is_tied or "lm_head.weight" not in names
        embed = self._vocab_table("model.embed_tokens.weight", vocab)
        head = None if is_tied else self._vocab_table("lm_head.weight", vocab)
        self._used.add("lm_head.weight")  # a tied checkpoint's copy of the embedding is not read
        embedding, lm_head = self.factory.embedding_and_head(embed, head)
        if self.group.is_distributed:
            embedding = VocabParallelEmbedding(embedding, vocab, self.group)
        return embedding, lm_head

    def _vocab_table(self, name: str, vocab: Range):
        """A vocabulary table's rows: a GGUF tensor's blocks as they are where the format keeps 8-bit records (no
        float round trip: ~1 s of a start for a 49k x 576 table), else the stored values."""
        return self._q8_blocks([(name, vocab, None)], is_vocabulary=True) or self.tensor(name, vocab)

    def _q8_blocks(self, pieces: list[tuple[str, Range | None, Range | None]],
                   is_vocabulary: bool = False) -> Q8Blocks | None:
        """(name, rows, cols) pieces fused by rows, as the GGUF's own 8-bit blocks (GGUFCheckpoint.q8_blocks)
        where the format keeps those in 8-bit records and every piece has them; else None."""
        if not self.factory.weight_format.keeps_q8_0(is_vocabulary):
            return None
        blocks = [self.reader.q8_blocks(name, rows, cols) for name, rows, cols in pieces]
        if any(b is None for b in blocks):
            return None
        self._used.update(name for name, _, _ in pieces)
        if len(blocks) == 1:
            return blocks[0]
        return Q8Blocks.cat(blocks)

    def _source_bits(self, names: list[str]) -> int | None:
        """The bits per weight of the finest quantized tensor among `names` (fused ones), None if any is float."""
        bits = [self.reader.source_bits(name) for name in names]
        return None if None in bits else max(bits)

    def _native(self, name: str) -> Q4Tensor:
        self._used.add(name)
        return self.native[name]

    def check_all_used(self) -> None:
        leftovers = sorted((self.reader.names() | set(self.native)) - self._used)
        leftovers = [n for n in leftovers if not n.endswith("rotary_emb.inv_freq")]
        if leftovers:
            raise ValueError(f"checkpoint has weights the native Llama forward does not use: {leftovers[:5]}")
