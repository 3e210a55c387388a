"""The config and tokenizer hearth builds in memory from a GGUF's metadata against the ones transformers builds
from the same file (AutoConfig / AutoTokenizer with gguf_file=)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from hearth.engine.loading.gguf_metadata import (
    _by_transformers,
    gguf_config,
    gguf_eos_token_ids,
    gguf_tokenizer,
    transformers_config,
)
from hearth.engine.loading.loader import source_gguf

TEXTS = ["Hello world!", "  leading spaces\n\ttabs and trailing  ", "<|im_start|>user\nHi<|im_end|>\n",
         "émoji 🎉, 中文 and ümlauts", "def f(x):\n    return x ** 2  # 1234567", "<|endoftext|>"]


@pytest.fixture(scope="module", params=["default", "Q4_K_M", "Q8_0"])
def gguf_path(request, default_entry, kquant_gguf):
    if request.param == "default":
        path = source_gguf(default_entry, default_entry.path)
        assert path is not None, "make setup keeps the default model's GGUF"
        return path
    return kquant_gguf[request.param]


def test_the_config_is_transformers_own_for_the_file(gguf_path):
    from transformers import AutoConfig

    theirs = _by_transformers(gguf_path, lambda folder, name: AutoConfig.from_pretrained(folder, gguf_file=name))
    light = gguf_config(gguf_path)
    ours = transformers_config(light).to_dict()
    theirs = theirs.to_dict()
    # transformers names the (temporary) folder it read and leaves the class to the model loader.
    for key in ("_name_or_path", "architectures", "quantization_config"):
        ours.pop(key, None)
        theirs.pop(key, None)
    assert ours == theirs
    assert type(transformers_config(light)).__name__ == "LlamaConfig"
    assert light.architectures == ["LlamaForCausalLM"]
    # What the native forward reads from the light config is transformers' value.
    for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                "head_dim", "rms_norm_eps", "vocab_size", "tie_word_embeddings", "max_position_embeddings",
                "bos_token_id", "eos_token_id"):
        assert getattr(light, key) == theirs[key], key
    assert light.rope_theta == theirs["rope_parameters"]["rope_theta"]
    assert theirs["rope_parameters"]["rope_type"] == "default"
    assert light.model_type == "llama"


def test_a_gguf_start_does_not_import_llamaconfigs_machinery(gguf_path):
    """LlamaConfig's module imports transformers' kernel hub and weight conversion (torch.distributed.tensor,
    sympy, accelerate), ~1 s of a start, which a GGUF's config and tokenizer do not need."""
    code = ("import sys; from pathlib import Path; "
            "from hearth.engine.loading.gguf_metadata import gguf_config, gguf_tokenizer; "
            f"gguf_config(Path({str(gguf_path)!r})); gguf_tokenizer(Path({str(gguf_path)!r})); "
            "print(sorted(m for m in ('transformers.activations', 'torch.distributed.tensor', 'accelerate', "
            "'transformers.models.llama.configuration_llama') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_the_tokenizer_encodes_decodes_and_templates_as_transformers_own(gguf_path):
    from transformers import AutoTokenizer

    theirs = _by_transformers(gguf_path, lambda folder, name: AutoTokenizer.from_pretrained(folder, gguf_file=name))
    ours = gguf_tokenizer(gguf_path)
    assert len(ours) == len(theirs)
    for text in TEXTS:
        assert ours.encode(text) == theirs.encode(text), text
        ids = theirs.encode(text)
        assert ours.decode(ids) == theirs.decode(ids)
        assert ours.decode(ids, skip_special_tokens=True) == theirs.decode(ids, skip_special_tokens=True)
    assert (ours.bos_token, ours.eos_token, ours.pad_token, ours.unk_token) == \
        (theirs.bos_token, theirs.eos_token, theirs.pad_token, theirs.unk_token)
    assert ours.all_special_tokens == theirs.all_special_tokens
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Bye"}]
    assert ours.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == \
        theirs.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert ours.eos_token == "<|im_end|>"
    assert ours.convert_tokens_to_ids("<|im_end|>") in gguf_eos_token_ids(gguf_path, ours)
