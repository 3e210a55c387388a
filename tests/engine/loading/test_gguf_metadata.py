"""The config and tokenizer hearth builds in memory from a GGUF's metadata against the ones transformers builds
from the same file (AutoConfig / AutoTokenizer with gguf_file=)."""

from __future__ import annotations

import pytest

from hearth.engine.loading.gguf_metadata import _by_transformers, gguf_config, gguf_eos_token_ids, gguf_tokenizer
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
    ours = gguf_config(gguf_path).to_dict()
    theirs = theirs.to_dict()
    # transformers names the (temporary) folder it read and leaves the class to the model loader.
    for key in ("_name_or_path", "architectures", "quantization_config"):
        ours.pop(key, None)
        theirs.pop(key, None)
    assert ours == theirs
    assert gguf_config(gguf_path).architectures == ["LlamaForCausalLM"]


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
