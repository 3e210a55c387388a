"""A plain llama GGUF's config: the values of its metadata under transformers' names, read without transformers.

transformers' config classes import transformers (its package init, then a scan of every model folder:
~0.9 s of a start) and LlamaConfig's module more still; the native forward reads only the values.
transformers_config() in gguf_metadata turns one into LlamaConfig where transformers' modules need it.
"""

from __future__ import annotations

from typing import Any

# GGUF metadata key -> transformers' config name, for the keys of a plain llama file (transformers'
# GGUF_CONFIG_MAPPING for the "general", "llama" and "tokenizer" prefixes; test_gguf_metadata.py checks that
# they agree).
LLAMA_KEYS = {
    "general.architecture": "model_type",
    "general.name": "_model_name_or_path",
    "llama.context_length": "max_position_embeddings",
    "llama.block_count": "num_hidden_layers",
    "llama.feed_forward_length": "intermediate_size",
    "llama.embedding_length": "hidden_size",
    "llama.rope.dimension_count": "head_dim",
    "llama.rope.freq_base": "rope_theta",
    "llama.attention.head_count": "num_attention_heads",
    "llama.attention.head_count_kv": "num_key_value_heads",
    "llama.attention.layer_norm_rms_epsilon": "rms_norm_eps",
    "llama.vocab_size": "vocab_size",
    "tokenizer.ggml.bos_token_id": "bos_token_id",
    "tokenizer.ggml.eos_token_id": "eos_token_id",
    "tokenizer.ggml.unknown_token_id": "unk_token_id",
    "tokenizer.ggml.padding_token_id": "pad_token_id",
}
# transformers' causal-LM class for each model type built here.
ARCHITECTURES = {"llama": "LlamaForCausalLM"}


class FileConfig:
    """Attribute access to `values` (what the file states, under transformers' names), as a config gives it.
    A name the file does not state is missing here too, so `getattr(config, name, default)` reads the default
    that the native forward's code names."""

    def __init__(self, values: dict[str, Any]) -> None:
        if values.get("model_type") not in ARCHITECTURES:
            raise ValueError(f"model_type must be one of {sorted(ARCHITECTURES)}, got {values.get('model_type')!r}")
        self.__dict__.update(values)
        self.architectures = [ARCHITECTURES[self.model_type]]

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def __repr__(self) -> str:
        return f"FileConfig({self.__dict__!r})"
