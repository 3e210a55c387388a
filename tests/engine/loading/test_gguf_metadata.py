"""The config and tokenizer hearth builds in memory from a GGUF's metadata, without importing transformers,
against the ones transformers builds from the same file (AutoConfig / AutoTokenizer with gguf_file=)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from hearth.engine.loading import byte_level_bpe, file_config, gguf_metadata
from hearth.engine.loading.file_tokenizer import FileTokenizer, with_bos_eos
from hearth.engine.loading.gguf_file import open_gguf
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
    assert type(light).__name__ == "FileConfig"
    assert light.architectures == ["LlamaForCausalLM"]
    # What the native forward reads from the light config is transformers' value.
    for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                "head_dim", "rms_norm_eps", "vocab_size", "tie_word_embeddings", "max_position_embeddings",
                "bos_token_id", "eos_token_id"):
        assert getattr(light, key) == theirs[key], key
    assert light.rope_theta == theirs["rope_parameters"]["rope_theta"]
    assert theirs["rope_parameters"]["rope_type"] == "default"
    assert light.model_type == "llama"


def test_the_renames_are_transformers_own():
    """hearth's copies of transformers' GGUF key tables (a plain llama file's config, the tokenizer's fields)."""
    from transformers.integrations.ggml import GGUF_CONFIG_MAPPING
    from transformers.integrations.gguf import GGUF_TOKENIZER_MAPPING
    from transformers.integrations.gguf.gguf_tokenizer_mapping import _SPECIAL_TOKENS

    theirs = {f"{prefix}.{key}": name for prefix in ("general", "llama", "tokenizer")
              for key, name in GGUF_CONFIG_MAPPING[prefix].items() if name != -1}
    assert file_config.LLAMA_KEYS == theirs
    assert gguf_metadata.TOKENIZER_KEYS == {f"tokenizer.{k}": v for k, v in GGUF_TOKENIZER_MAPPING["tokenizer"].items()}
    assert gguf_metadata.TOKENIZER_CONFIG_KEYS == {f"tokenizer.{k}": v
                                                  for k, v in GGUF_TOKENIZER_MAPPING["tokenizer_config"].items()}
    assert gguf_metadata.SPECIAL_TOKEN_KEYS == {name: f"tokenizer.ggml.{key}" for name, key in _SPECIAL_TOKENS.items()}


def test_a_gguf_engine_starts_without_importing_transformers(kquant_gguf):
    """transformers' package init and its scan of every model folder are ~0.9 s of a start; a plain llama file
    with a byte-level vocabulary needs none of it, from the config to the first generated token."""
    path = kquant_gguf["Q4_K_M"]
    code = f"""
import sys
from pathlib import Path
from hearth.engine.chat import render_chat
from hearth.engine.config import EngineConfig
from hearth.engine.llm_engine import LLMEngine
from hearth.engine.loading.registry import ModelEntry
from hearth.engine.sampling.sampling_params import SamplingParams
entry = ModelEntry(id="tiny", path=Path({str(path)!r}))
engine = LLMEngine(EngineConfig(model_path=str(entry.path), quantization=entry.serving_format(), max_num_seqs=2),
                   entry)
engine.add_request("r", render_chat(engine.tokenizer, [{{"role": "user", "content": "Hi"}}]),
                   SamplingParams(max_tokens=2, temperature=0.0, ignore_eos=True))
tokens = 0
while engine.has_unfinished_requests():
    for out in engine.step():
        tokens = out.num_completion_tokens
print(tokens, sorted(m for m in sys.modules if m.split(".")[0] == "transformers"))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "2 []"


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
    # What the server and the engine read from it.
    assert json.loads(ours.backend_tokenizer.to_str()) == json.loads(theirs.backend_tokenizer.to_str())
    assert ours("Hello world!").input_ids == theirs("Hello world!").input_ids
    assert ours.get_vocab() == theirs.get_vocab()
    assert {i: (t.content, t.special) for i, t in ours.added_tokens_decoder.items()} == \
        {i: (t.content, t.special) for i, t in theirs.added_tokens_decoder.items()}
    ids = ours.encode(TEXTS[3])
    assert ours.convert_ids_to_tokens(ids) == theirs.convert_ids_to_tokens(ids)
    assert (ours.eos_token_id, ours.bos_token_id, ours.pad_token_id) == \
        (theirs.eos_token_id, theirs.bos_token_id, theirs.pad_token_id)
    assert ours.apply_chat_template(messages, add_generation_prompt=True) == \
        theirs.apply_chat_template(messages, add_generation_prompt=True, return_dict=False)


def test_transformers_converter_path_gives_the_same_tokenizer(gguf_path):
    """The path a vocabulary byte_level_bpe does not build takes (transformers' converter, wrapped)."""
    native, converted = gguf_tokenizer(gguf_path), gguf_tokenizer(gguf_path, native=False)
    assert isinstance(converted, FileTokenizer)
    assert json.loads(native.backend_tokenizer.to_str()) == json.loads(converted.backend_tokenizer.to_str())
    assert native.special_tokens_map == converted.special_tokens_map
    assert native.chat_template == converted.chat_template


@pytest.mark.parametrize("pre", ["llama-bpe", "qwen2", "gpt-2", "smollm", None])
@pytest.mark.parametrize("add_bos, add_eos", [(False, False), (True, False), (True, True)])
def test_each_pre_tokenizer_and_bos_eos_flag_build_transformers_backend(kquant_gguf, pre, add_bos, add_eos):
    """byte_level_bpe with each split it knows, and the BOS/EOS post-processor, against transformers' converter
    and PreTrainedTokenizerFast on the same fields (the tiny files' vocabulary, with user-defined tokens)."""
    from transformers import PreTrainedTokenizerFast
    from transformers.integrations.gguf import convert_gguf_tokenizer

    index = open_gguf(kquant_gguf["Q8_0"])
    fields, _ = gguf_metadata._tokenizer_fields(index)
    fields = {**fields, "token_type": [byte_level_bpe.USER_DEFINED if i in (300, 301) else t
                                       for i, t in enumerate(fields["token_type"])]}
    if pre is None:
        fields.pop("pre_tokenizer_type")
    else:
        fields["pre_tokenizer_type"] = pre
    assert byte_level_bpe.builds("gpt2", pre)
    backend, _ = convert_gguf_tokenizer("llama", dict(fields))
    theirs = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                     add_bos_token=add_bos, add_eos_token=add_eos)
    ours = with_bos_eos(byte_level_bpe.byte_level_bpe(fields["tokens"], fields["merges"], fields["token_type"], pre),
                        "<|im_start|>", "<|im_end|>", add_bos, add_eos)
    assert json.loads(ours.to_str()) == json.loads(theirs.backend_tokenizer.to_str())
    text = "It's 2024: 12345 apples\n\n  and   <think> words"
    assert ours.encode(text).ids == theirs.encode(text)


def test_the_pre_tokenizer_splits_are_transformers_own_and_others_go_to_its_converter():
    from transformers.integrations.gguf.gguf_tokenizer_mapping import GGUF_PRE_TOKENIZER_SPLITS

    for name, split in byte_level_bpe.PRE_TOKENIZER_SPLITS.items():
        assert GGUF_PRE_TOKENIZER_SPLITS.get(name) == split, name
    unknown = next(name for name in GGUF_PRE_TOKENIZER_SPLITS if name not in byte_level_bpe.PRE_TOKENIZER_SPLITS)
    assert not byte_level_bpe.builds("gpt2", unknown)
    assert not byte_level_bpe.builds("llama", None)
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    assert byte_level_bpe.bytes_to_unicode() == bytes_to_unicode()
