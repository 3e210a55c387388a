"""Native Llama-family forward (Llama 2/3, Mistral without sliding window, Qwen2, SmolLM).

Weights load straight from HF safetensors; q/k/v and gate/up projections are fused into one matmul
each. Numerics follow transformers' LlamaForCausalLM: RMSNorm in float32 cast back before the weight,
rotary tables computed in float32 and cast to the model dtype, residuals in the model dtype.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from hearth.engine.distributed.group import TensorParallelGroup
from hearth.engine.distributed.layers import ShardedLayers
from hearth.engine.distributed.sharding import CheckpointReader, LlamaPartition, resident_bytes
from hearth.engine.loading.gguf_weights import Q4Tensor
from hearth.engine.loading.registry import cache_dir
from hearth.engine.model.attention import AttentionMetadata, paged_attention
from hearth.engine.model.formats import DEFAULT_FORMAT, WeightFormat
from hearth.engine.model.kv_cache import KVCache
from hearth.engine.model.linear import BlockQuantizedLinear, Linear
from hearth.engine.model.linear_factory import LinearFactory
from hearth.engine.model.row_tiling import RowTilingStore
from hearth.kernels.model import fused_layer
from hearth.kernels.model.huge_pages import HugePageArena

NATIVE_ARCHITECTURES = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM")


@dataclass(frozen=True)
class LlamaShape:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    tie_word_embeddings: bool
    has_qkv_bias: bool

    @classmethod
    def from_config(cls, config) -> LlamaShape:
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        return cls(
            vocab_size=config.vocab_size,
            hidden_size=config.hidden_size,
            intermediate_size=config.intermediate_size,
            num_layers=config.num_hidden_layers,
            num_heads=config.num_attention_heads,
            num_kv_heads=getattr(config, "num_key_value_heads", None) or config.num_attention_heads,
            head_dim=head_dim,
            rms_norm_eps=config.rms_norm_eps,
            tie_word_embeddings=bool(getattr(config, "tie_word_embeddings", False)),
            has_qkv_bias=bool(getattr(config, "attention_bias", False)) or config.model_type == "qwen2",
        )


def supports_native(config) -> str | None:
    """None when the native forward handles `config`, else the reason it does not."""
    architectures = getattr(config, "architectures", None) or []
    if not any(a in NATIVE_ARCHITECTURES for a in architectures):
        return f"architecture {architectures} is not one of {NATIVE_ARCHITECTURES}"
    if getattr(config, "hidden_act", "silu") != "silu":
        return f"hidden_act {config.hidden_act!r} is not silu"
    window = getattr(config, "sliding_window", None)
    if window and getattr(config, "use_sliding_window", True) and window < getattr(config, "max_position_embeddings", 0):
        return f"sliding-window attention ({window}) is not implemented natively"
    if getattr(config, "mlp_bias", False):
        return "mlp_bias is not implemented natively"
    return None


def rotary_tables(config, max_positions: int, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
    """cos, sin [max_positions, head_dim], computed as transformers does (any rope_type it knows; transformers
    is imported only for a scaled rope, since a GGUF's start does not import it otherwise)."""
    parameters = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    rope_type = parameters.get("rope_type", parameters.get("type", "default"))
    if rope_type == "default":
        shape = LlamaShape.from_config(config)
        theta = parameters.get("rope_theta", getattr(config, "rope_theta", 10000.0))
        exponents = torch.arange(0, shape.head_dim, 2, dtype=torch.int64).to(device=device, dtype=torch.float)
        inv_freq = 1.0 / (theta ** (exponents / shape.head_dim))
        scaling = 1.0
    else:
        from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

        inv_freq, scaling = ROPE_INIT_FUNCTIONS[rope_type](config, device)
    positions = torch.arange(max_positions, device=device, dtype=torch.float32)
    freqs = positions[:, None] * inv_freq.float()[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    return (emb.cos() * scaling).to(dtype), (emb.sin() * scaling).to(dtype)


def _rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """transformers' LlamaRMSNorm: normalise in float32, cast to the weight's (activation) dtype, then scale
    (bit-identical to it when x is in that dtype; a float32 residual stream is normalised as it is)."""
    return weight * F.rms_norm(x.float(), (x.shape[-1],), eps=eps).to(weight.dtype)


def _rotate(x: Tensor, cos: Tensor, signed_sin: Tensor) -> Tensor:
    """x [T, heads, head_dim]; cos, signed_sin [T, 1, head_dim].

    transformers' x * cos + rotate_half(x) * sin with rotate_half(x) = cat(-x2, x1): the sign lives in
    signed_sin (first half negated) and cat(x2, x1) is a roll, the same products bit for bit."""
    return x * cos + torch.roll(x, x.shape[-1] // 2, dims=-1) * signed_sin


class LlamaModel:
    """Weights as hearth.engine.model.linear layers; forward over a flat batch of tokens [T].

    Decode rows and the rows sampled from go through each layer's rows_invariant path, prefill chunks
    through one call per chunk in the geometry of their whole chunk (hearth.engine.model.attention), so that a
    sequence's tokens never depend on what else is batched, nor on where a cache hit cut its prompt.

    Under tensor parallelism (hearth.engine.distributed) the model holds one rank's shard (`partition`): its
    query and KV heads, its slice of the MLP features and of the vocabulary. The forward is the same on
    every rank; `group` adds the partial sums of o and down (one all-reduce each) and gathers the logits
    to rank 0. With one rank the partition is the whole model and the group's collectives are identities."""

    def __init__(self, config, dtype: torch.dtype, device: torch.device, max_positions: int,
                 weight_format: WeightFormat | None = None, partition: LlamaPartition | None = None,
                 group: TensorParallelGroup | None = None) -> None:
        self.config = config
        self.shape = LlamaShape.from_config(config)
        self.dtype = dtype
        self.device = device
        self.weight_format = weight_format or DEFAULT_FORMAT
        self.partition = partition or LlamaPartition.build(self.shape, 0, 1, self.weight_format.group_size)
        self.group = group or TensorParallelGroup.single(device)
        # This rank's heads: attention runs on them alone.
        self.num_heads, self.num_kv_heads = self.partition.num_heads, self.partition.num_kv_heads
        self.cos, sin = rotary_tables(config, max_positions, dtype, device)
        half = sin.shape[-1] // 2
        self.signed_sin = torch.cat([-sin[:, :half], sin[:, half:]], dim=-1)
        self.scale = self.shape.head_dim ** -0.5
        self.residual_dtype = self.weight_format.residual_dtype(dtype)
        self.layers: list[dict] = []
        self.embedding = None
        self.final_norm: Tensor | None = None
        self.lm_head: Linear | None = None
        # Set by load_weights: None when layers run as hearth.kernels.model.fused_layer's calls.
        self.fused_layer_reason: str | None = "no weights loaded"
        self.layer_stack: fused_layer.LayerStack | None = None
        # Set by load_weights on CPU: the mapping that holds the packed weights (hearth.kernels.model.huge_pages).
        self.weight_arena: HugePageArena | None = None
        # Steps of the fused path whose rows the row kernel attends all (every step with int8/int4 weights on
        # it) run the whole stack in one call (apply_decode_layers); tests turn it off to compare it with the
        # per-layer calls.
        self.uses_decode_stack = True
        # With a float32 residual stream (quantized weights), the torch path's norm and silu * up run as
        # hearth.kernels.model.fused_layer computes them, so that it and the fused path agree bit for bit.
        self.has_c_elementwise = (self.residual_dtype == torch.float32 and dtype == torch.bfloat16
                                  and device.type == "cpu" and fused_layer.unavailable_reason() is None)

    @classmethod
    def from_folder(cls, folder: Path, config, dtype: torch.dtype, device: torch.device, max_positions: int,
                    weight_format: WeightFormat | None = None, native: dict[str, Q4Tensor] | None = None,
                    partition: LlamaPartition | None = None, group: TensorParallelGroup | None = None) -> LlamaModel:
        """This rank's slices of the folder's safetensors, except 4-bit weights given in `native` (GGUF)."""
        with CheckpointReader(folder) as reader:
            return cls.from_checkpoint(reader, config, dtype, device, max_positions, weight_format, native, partition,
                                       group)

    @classmethod
    def from_checkpoint(cls, reader, config, dtype: torch.dtype, device: torch.device, max_positions: int,
                        weight_format: WeightFormat | None = None, native: dict[str, Q4Tensor] | None = None,
                        partition: LlamaPartition | None = None, group: TensorParallelGroup | None = None) -> LlamaModel:
        """This rank's slices of `reader`'s weights (CheckpointReader or GGUFCheckpoint: names() and
        read(name, rows, cols)), except 4-bit weights given in `native` (GGUF)."""
        model = cls(config, dtype, device, max_positions, weight_format, partition, group)
        factory = LinearFactory(model.weight_format, dtype, device)
        model.load_weights(ShardedLayers(reader, native or {}, factory, model.group))
        model.calibrate(RowTilingStore(cache_dir() / "row_tiling.json"))
        return model

    def load_weights(self, weights: ShardedLayers) -> None:
        shape, part = self.shape, self.partition
        q_rows = (part.q_heads[0] * shape.head_dim, part.q_heads[1] * shape.head_dim)
        kv_rows = (part.kv_heads[0] * shape.head_dim, part.kv_heads[1] * shape.head_dim)
        for i in range(shape.num_layers):
            p = f"model.layers.{i}."
            attn, mlp = p + "self_attn.", p + "mlp."
            self.layers.append({
                "input_norm": weights.vector(p + "input_layernorm.weight"),
                "qkv": weights.column([(attn + "q_proj", q_rows), (attn + "k_proj", kv_rows), (attn + "v_proj", kv_rows)],
                                      bias=shape.has_qkv_bias),
                "o": weights.row(attn + "o_proj", q_rows),
                "post_norm": weights.vector(p + "post_attention_layernorm.weight"),
                "gate_up": weights.column([(mlp + "gate_proj", part.intermediate), (mlp + "up_proj", part.intermediate)]),
                "down": weights.row(mlp + "down_proj", part.intermediate),
            })
        self.final_norm = weights.vector("model.norm.weight")
        self.embedding, self.lm_head = weights.embedding_and_head(part.vocab, shape.tie_word_embeddings)
        weights.check_all_used()
        self.fused_layer_reason = self._fused_layer_reason()
        self._place_packed_weights_on_huge_pages()

    def _place_packed_weights_on_huge_pages(self) -> None:
        """Every step streams the packed weights (hearth.kernels.model.vnni_linear's records, the head's too) from memory:
        copied once onto 2 MiB pages, a one-sequence bf16 step took ~5% less on this CPU
        (hearth.kernels.model.huge_pages). A table that the embedding shares with the head moves with it."""
        linears = [linear for linear in self.linears() if isinstance(linear, BlockQuantizedLinear)]
        if self.device.type != "cpu" or not linears:
            return
        distinct = list({id(linear.packed): linear.packed for linear in linears}.values())
        self.weight_arena = HugePageArena(HugePageArena.bytes_for(distinct))
        placed = {id(packed): self.weight_arena.copy(packed) for packed in distinct}
        for linear in linears:
            linear.packed = placed[id(linear.packed)]
        if id(getattr(self.embedding, "packed", None)) in placed:
            self.embedding.packed = placed[id(self.embedding.packed)]

    def _fused_layer_reason(self) -> str | None:
        """None when each layer runs as hearth.kernels.model.fused_layer's two calls around attention, else why the torch
        ops run: it takes block-quantized weights without biases (hearth.kernels.model.vnni_linear), a float32 residual
        stream, bf16 activations and one rank (o and down add to the residual without an all-reduce)."""
        if self.group.world_size > 1:
            return "tensor parallelism adds o's and down's partial sums across ranks"
        if self.residual_dtype != torch.float32 or self.dtype != torch.bfloat16:
            return f"residual {self.residual_dtype} with {self.dtype} activations"
        for layer in self.layers:
            for name in ("qkv", "o", "gate_up", "down"):
                linear = layer[name]
                if not isinstance(linear, BlockQuantizedLinear) or linear.bias is not None:
                    return f"{name} is a {type(linear).__name__}{' with a bias' if linear.bias is not None else ''}"
        return fused_layer.unavailable_reason()

    def linears(self) -> list[Linear]:
        return [layer[n] for layer in self.layers for n in ("qkv", "o", "gate_up", "down")] + [self.lm_head]

    @property
    def has_row_count_invariant_layers(self) -> bool:
        """Every layer's projections compute each row on their own at any row count, so a token's keys and
        values are the same bits in a decode step as in a prefill chunk of any size (where attention is too:
        hearth.kernels.model.row_attention). False where a layer fell back to a GEMM that tiles rows (a bf16 weight whose
        shape does not pack)."""
        return all(layer[name].is_row_count_invariant for layer in self.layers for name in ("qkv", "o", "gate_up", "down"))

    def calibrate(self, store: RowTilingStore | None = None) -> None:
        """Each kernel configuration's batch-invariant row counts (hearth.engine.model.row_tiling), measured once
        per machine and kept in `store`."""
        store = store or RowTilingStore(None)
        for linear in self.linears():
            linear.calibrate(self.dtype, store)

    def resident_weight_bytes(self) -> int:
        """Bytes of the distinct tensor storages this rank's weights hold (hearth.engine.distributed.sharding)."""
        return resident_bytes(self.layers, self.embedding, self.lm_head, self.final_norm)

    @property
    def num_weight_bytes(self) -> int:
        norms = sum(layer[n].numel() * layer[n].element_size() for layer in self.layers for n in ("input_norm", "post_norm"))
        tied = self.embedding.shares_head
        return (sum(linear.num_bytes for linear in self.linears()) + norms
                + (0 if tied else self.embedding.num_bytes))

    def _linear(self, x: Tensor, linear: Linear, md: AttentionMetadata) -> Tensor:
        if linear.is_row_count_invariant:
            # Each row is computed on its own at any row count: the whole flat batch in one call. A call
            # per prefill segment re-reads the weights each time: 8 chats' next turns (16 segments, 688 rows)
            # took 630 ms of linears against 550 ms in one call (int4 on VNNI, this CPU).
            return linear.matmul(x)
        if not md.prefills:
            return linear.rows_invariant(x)
        # Rows before the first SDPA chunk (decode rows, row-attended prefill rows) are computed alone.
        num_alone = md.prefills[0].token_start
        parts = [linear.rows_invariant(x[:num_alone])] if num_alone else []
        parts += [linear.matmul_in_chunk(x[seg.token_start:seg.token_start + seg.num_tokens], seg.row_offset,
                                         seg.num_geometry_rows) for seg in md.prefills]
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    @torch.inference_mode()
    def forward(self, input_ids: Tensor, positions: Tensor, md: AttentionMetadata, kv_cache: KVCache) -> Tensor:
        """input_ids, positions [T] -> final hidden states [T, hidden_size]."""
        shape = self.shape
        q_size = self.num_heads * shape.head_dim
        kv_size = self.num_kv_heads * shape.head_dim
        cos = self.cos.index_select(0, positions)  # [T, head_dim]
        sin = self.signed_sin.index_select(0, positions)
        hidden = self.embedding.lookup(input_ids).to(self.residual_dtype)
        num_tokens = input_ids.shape[0]
        if self.fused_layer_reason is None:
            return self._fused_forward(hidden, cos, sin, md, kv_cache)
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # [T, 1, head_dim]
        for index, layer in enumerate(self.layers):
            x = self._norm(hidden, layer["input_norm"])
            qkv = self._linear(x, layer["qkv"], md)
            # q and k heads rotate together: [T, num_heads + num_kv_heads, head_dim].
            qk = _rotate(qkv[:, :q_size + kv_size].view(num_tokens, -1, shape.head_dim), cos, sin)
            q, k = qk.split([self.num_heads, self.num_kv_heads], dim=1)
            v = qkv[:, q_size + kv_size:].view(num_tokens, self.num_kv_heads, shape.head_dim)
            attn = paged_attention(q, k, v, kv_cache.layer(index), md, self.scale)
            # o and down are row-parallel: each rank's output is a partial sum, added across ranks.
            hidden = hidden + self.group.all_reduce(self._linear(attn.view(num_tokens, q_size), layer["o"], md))
            x = self._norm(hidden, layer["post_norm"])
            act = self._silu_mul(self._linear(x, layer["gate_up"], md))
            hidden = hidden + self.group.all_reduce(self._linear(act, layer["down"], md))
        return _rms_norm(hidden, self.final_norm, shape.rms_norm_eps)

    def _norm(self, hidden: Tensor, weight: Tensor) -> Tensor:
        if self.has_c_elementwise:
            return fused_layer.apply_rms_norm(hidden, weight, self.shape.rms_norm_eps)
        return _rms_norm(hidden, weight, self.shape.rms_norm_eps)

    def _silu_mul(self, gate_up: Tensor) -> Tensor:
        if self.has_c_elementwise:
            return fused_layer.apply_silu_mul(gate_up)
        gate, up = gate_up.chunk(2, dim=-1)
        return F.silu(gate) * up

    def _fused_forward(self, hidden: Tensor, cos: Tensor, sin: Tensor, md: AttentionMetadata,
                       kv_cache: KVCache) -> Tensor:
        """forward's layers as hearth.kernels.model.fused_layer's two calls around attention each (fused_layer_reason);
        cos, sin [T, head_dim] the rows' rotary tables."""
        shape = self.shape
        num_tokens = hidden.shape[0]
        hidden = hidden.contiguous()
        rows = md.row_contexts
        if self.uses_decode_stack and not md.prefills and rows is not None:
            # Every row attended by the row kernel (int8/int4: decode and prefill rows): the same calls, made from C
            # (hearth.kernels.model.fused_layer.apply_decode_layers).
            fused_layer.apply_decode_layers(hidden, self._layer_stack(), shape.rms_norm_eps, self.num_heads,
                                            shape.head_dim, self.layers[0]["down"].in_features, cos, sin,
                                            kv_cache.data, md.slot_mapping, rows.tables, rows.table_starts,
                                            rows.positions, rows.block_size, self.scale)
            return _rms_norm(hidden, self.final_norm, shape.rms_norm_eps)
        for index, layer in enumerate(self.layers):
            q, k, v = fused_layer.apply_layer_front(hidden, layer["input_norm"], shape.rms_norm_eps,
                                                    (layer["qkv"].form, layer["qkv"].packed), self.num_heads,
                                                    self.num_kv_heads, shape.head_dim, cos, sin)
            attn = paged_attention(q, k, v, kv_cache.layer(index), md, self.scale)
            fused_layer.apply_layer_back(hidden, attn.reshape(num_tokens, -1), (layer["o"].form, layer["o"].packed),
                                         layer["post_norm"], shape.rms_norm_eps,
                                         (layer["gate_up"].form, layer["gate_up"].packed),
                                         (layer["down"].form, layer["down"].packed), layer["down"].in_features)
        return _rms_norm(hidden, self.final_norm, shape.rms_norm_eps)

    def _layer_stack(self) -> fused_layer.LayerStack:
        """The layers' weights as hearth.kernels.model.fused_layer.apply_decode_layers takes them, built on first use."""
        if self.layer_stack is None:
            self.layer_stack = fused_layer.LayerStack([
                {name: (layer[name].form, layer[name].packed) if name in ("qkv", "o", "gate_up", "down") else layer[name]
                 for name in ("input_norm", "qkv", "o", "post_norm", "gate_up", "down")} for layer in self.layers])
        return self.layer_stack

    @torch.inference_mode()
    def compute_logits(self, hidden: Tensor) -> Tensor | None:
        """hidden [N, hidden_size] -> logits [N, vocab_size] in the head's output dtype (the model dtype, or
        float32 from a Q8_0 head); each row batch-invariant.
        Each rank computes its vocabulary columns; rank 0 gets them all, other ranks None."""
        return self.group.gather_columns(self.lm_head.rows_invariant(hidden), self.partition.vocab_widths)
