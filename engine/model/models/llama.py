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
from safetensors import safe_open
from torch import Tensor

from engine.model.attention import AttentionMetadata, paged_attention
from engine.model.kv_cache import KVCache

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
    """cos, sin [max_positions, head_dim], computed as transformers does (any rope_type it knows)."""
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    parameters = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    rope_type = parameters.get("rope_type", parameters.get("type", "default"))
    if rope_type == "default":
        shape = LlamaShape.from_config(config)
        theta = parameters.get("rope_theta", getattr(config, "rope_theta", 10000.0))
        exponents = torch.arange(0, shape.head_dim, 2, dtype=torch.int64).to(device=device, dtype=torch.float)
        inv_freq = 1.0 / (theta ** (exponents / shape.head_dim))
        scaling = 1.0
    else:
        inv_freq, scaling = ROPE_INIT_FUNCTIONS[rope_type](config, device)
    positions = torch.arange(max_positions, device=device, dtype=torch.float32)
    freqs = positions[:, None] * inv_freq.float()[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    return (emb.cos() * scaling).to(dtype), (emb.sin() * scaling).to(dtype)


def _rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """transformers' LlamaRMSNorm: normalise in float32, cast back, then scale (bit-identical to it)."""
    return weight * F.rms_norm(x.float(), (x.shape[-1],), eps=eps).to(x.dtype)


@dataclass(frozen=True)
class RowPadding:
    """How many rows a GEMM input is padded to, so that each row's result is the same in any batch."""

    multiple: int = 1
    minimum: int = 1

    def padded(self, num_rows: int) -> int:
        return max(self.minimum, -(-num_rows // self.multiple) * self.multiple)


def batch_invariant_padding(dtype: torch.dtype, device: torch.device) -> RowPadding:
    """Measured on this project's CPU (tests/engine/models/test_batch_invariance.py):

    - float32 (MKL) computed rows differently for 1-3, 5-7 and 9-11 rows than for 8 or more; padding to
      a multiple of 8 made every row bit-identical whatever the batch.
    - bfloat16 (oneDNN) takes a GEMV path for a single row whose float32 accumulation order differs from
      the GEMM used for 2 or more rows: rarely visible after bf16 rounding, but it was (1 ulp of one
      output in a decode step). Two rows minimum removes it.
    """
    if device.type != "cpu":
        return RowPadding()
    if dtype == torch.float32:
        return RowPadding(multiple=8, minimum=8)
    return RowPadding(minimum=2)


def _rotate(x: Tensor, cos: Tensor, signed_sin: Tensor) -> Tensor:
    """x [T, heads, head_dim]; cos, signed_sin [T, 1, head_dim].

    transformers' x * cos + rotate_half(x) * sin with rotate_half(x) = cat(-x2, x1): the sign lives in
    signed_sin (first half negated) and cat(x2, x1) is a roll, the same products bit for bit."""
    return x * cos + torch.roll(x, x.shape[-1] // 2, dims=-1) * signed_sin


class LlamaModel:
    """Weights as plain tensors; forward over a flat batch of tokens [T]."""

    def __init__(self, config, dtype: torch.dtype, device: torch.device, max_positions: int) -> None:
        self.config = config
        self.shape = LlamaShape.from_config(config)
        self.dtype = dtype
        self.device = device
        self.cos, sin = rotary_tables(config, max_positions, dtype, device)
        half = sin.shape[-1] // 2
        self.signed_sin = torch.cat([-sin[:, :half], sin[:, half:]], dim=-1)
        self.scale = self.shape.head_dim ** -0.5
        self.row_padding = batch_invariant_padding(dtype, device)
        self.is_prepacked = False
        self.layers: list[dict[str, Tensor]] = []
        self.embed: Tensor | None = None
        self.final_norm: Tensor | None = None
        self.lm_head: Tensor | None = None

    @classmethod
    def from_folder(cls, folder: Path, config, dtype: torch.dtype, device: torch.device, max_positions: int) -> LlamaModel:
        model = cls(config, dtype, device, max_positions)
        tensors: dict[str, Tensor] = {}
        files = sorted(Path(folder).glob("*.safetensors"))
        if not files:
            raise FileNotFoundError(f"no *.safetensors weights in {folder}")
        for file in files:
            with safe_open(str(file), framework="pt", device="cpu") as handle:
                for name in handle.keys():  # noqa: SIM118 (safe_open is not a dict)
                    tensors[name] = handle.get_tensor(name)
        model.load_weights(tensors)
        model.prepack()
        return model

    def load_weights(self, tensors: dict[str, Tensor]) -> None:
        def take(name: str) -> Tensor:
            if name not in tensors:
                raise KeyError(f"weight {name!r} is missing from the checkpoint")
            return tensors.pop(name).to(device=self.device, dtype=self.dtype).contiguous()

        shape = self.shape
        self.embed = take("model.embed_tokens.weight")
        for i in range(shape.num_layers):
            p = f"model.layers.{i}."
            layer = {
                "input_norm": take(p + "input_layernorm.weight"),
                "qkv": torch.cat([take(p + f"self_attn.{n}_proj.weight") for n in "qkv"]),
                "o": take(p + "self_attn.o_proj.weight"),
                "post_norm": take(p + "post_attention_layernorm.weight"),
                "gate_up": torch.cat([take(p + "mlp.gate_proj.weight"), take(p + "mlp.up_proj.weight")]),
                "down": take(p + "mlp.down_proj.weight"),
            }
            if shape.has_qkv_bias:
                layer["qkv_bias"] = torch.cat([take(p + f"self_attn.{n}_proj.bias") for n in "qkv"])
            self.layers.append(layer)
        self.final_norm = take("model.norm.weight")
        if shape.tie_word_embeddings or "lm_head.weight" not in tensors:
            self.lm_head = self.embed
        else:
            self.lm_head = take("lm_head.weight")
        tensors.pop("lm_head.weight", None)
        leftovers = [n for n in tensors if not n.endswith("rotary_emb.inv_freq")]
        if leftovers:
            raise ValueError(f"checkpoint has weights the native Llama forward does not use: {leftovers[:5]}")

    def prepack(self, batch_hint: int = 8) -> bool:
        """Reorder the bfloat16 projection weights once into oneDNN's blocked layout.

        oneDNN otherwise repacks a bf16 weight on every call: with few rows that repacking, not the
        arithmetic, was most of the GEMM time (30 layers of 6144x576 at 8 rows: 17.5 ms plain, 12.8 ms
        prepacked; results bit-identical). Returns whether the weights were prepacked.
        """
        if self.dtype != torch.bfloat16 or self.device.type != "cpu" or not torch.backends.mkldnn.is_available():
            return False
        try:
            reorder = torch.ops.mkldnn._reorder_linear_weight
            for layer in self.layers:
                for name in ("qkv", "o", "gate_up", "down"):
                    layer[name] = reorder(layer[name], batch_hint)
            self.lm_head = reorder(self.lm_head, batch_hint)
        except (RuntimeError, AttributeError):
            return False
        self.is_prepacked = True
        return True

    def _linear(self, x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
        num_rows = x.shape[0]
        padding = self.row_padding.padded(num_rows) - num_rows
        if padding:
            x = torch.cat([x, x.new_zeros(padding, x.shape[1])])
        if self.is_prepacked:
            out = torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
        else:
            out = F.linear(x, weight, bias)
        return out[:num_rows] if padding else out

    @torch.inference_mode()
    def forward(self, input_ids: Tensor, positions: Tensor, md: AttentionMetadata, kv_cache: KVCache) -> Tensor:
        """input_ids, positions [T] -> final hidden states [T, hidden_size]."""
        shape = self.shape
        q_size = shape.num_heads * shape.head_dim
        kv_size = shape.num_kv_heads * shape.head_dim
        cos = self.cos.index_select(0, positions).unsqueeze(1)  # [T, 1, head_dim]
        sin = self.signed_sin.index_select(0, positions).unsqueeze(1)
        hidden = self.embed.index_select(0, input_ids)
        num_tokens = input_ids.shape[0]
        for index, layer in enumerate(self.layers):
            x = _rms_norm(hidden, layer["input_norm"], shape.rms_norm_eps)
            qkv = self._linear(x, layer["qkv"], layer.get("qkv_bias"))
            # q and k heads rotate together: [T, num_heads + num_kv_heads, head_dim].
            qk = _rotate(qkv[:, :q_size + kv_size].view(num_tokens, -1, shape.head_dim), cos, sin)
            q, k = qk.split([shape.num_heads, shape.num_kv_heads], dim=1)
            v = qkv[:, q_size + kv_size:].view(num_tokens, shape.num_kv_heads, shape.head_dim)
            attn = paged_attention(q, k, v, kv_cache.layer(index), md, self.scale)
            hidden = hidden + self._linear(attn.view(num_tokens, q_size), layer["o"])
            x = _rms_norm(hidden, layer["post_norm"], shape.rms_norm_eps)
            gate, up = self._linear(x, layer["gate_up"]).chunk(2, dim=-1)
            hidden = hidden + self._linear(F.silu(gate) * up, layer["down"])
        return _rms_norm(hidden, self.final_norm, shape.rms_norm_eps)

    @torch.inference_mode()
    def compute_logits(self, hidden: Tensor) -> Tensor:
        """hidden [N, hidden_size] -> logits [N, vocab_size] in the model dtype."""
        return self._linear(hidden, self.lm_head)
