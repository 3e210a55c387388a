"""A GGUF file's config, tokenizer (with its chat template) and end-of-turn ids, built in memory from the
file's own metadata: serving a .gguf writes nothing to disk.

transformers builds both from a GGUF itself (`gguf_file=`), but its readers walk the file's token and merge
arrays in Python (several seconds per start for a 49k-token vocabulary), and importing transformers at all
costs ~0.9 s of a start. So a plain llama file's config is a FileConfig of its renamed values, and a byte-level
BPE vocabulary (gpt2: Llama 3, SmolLM, Qwen2) becomes a FileTokenizer over the backend byte_level_bpe builds,
both from hearth's own index of the file (gguf_file.GGUFIndex: the arrays decode in ~0.1 s), with no
transformers import. Other architectures' configs and other vocabularies go through transformers' own tables
and converters, slower and the same; test_gguf_metadata.py compares both paths with transformers' own result.
transformers_config() gives the architecture's transformers class where transformers' modules need it.
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

from hearth.engine.loading.byte_level_bpe import builds, byte_level_bpe
from hearth.engine.loading.file_config import LLAMA_KEYS, FileConfig
from hearth.engine.loading.file_tokenizer import FileTokenizer, with_bos_eos
from hearth.engine.loading.gguf_file import GGUFIndex, open_gguf

# The architectures whose config is the plain rename of their metadata keys (transformers'
# load_gguf_checkpoint adds nothing else for them but tie_word_embeddings and the vocabulary size).
PLAIN_CONFIG_ARCHITECTURES = frozenset({"llama"})
# GGUF tokenizer key -> the name transformers' converters read it under (its GGUF_TOKENIZER_MAPPING).
TOKENIZER_KEYS = {
    "tokenizer.ggml.model": "tokenizer_type", "tokenizer.ggml.pre": "pre_tokenizer_type",
    "tokenizer.ggml.tokens": "tokens", "tokenizer.ggml.scores": "scores", "tokenizer.ggml.token_type": "token_type",
    "tokenizer.ggml.merges": "merges", "tokenizer.ggml.precompiled_charsmap": "precompiled_charsmap",
    "tokenizer.ggml.bos_token_id": "bos_token_id", "tokenizer.ggml.eos_token_id": "eos_token_id",
    "tokenizer.ggml.unknown_token_id": "unk_token_id", "tokenizer.ggml.padding_token_id": "pad_token_id",
    "tokenizer.ggml.add_space_prefix": "add_prefix_space",
}
TOKENIZER_CONFIG_KEYS = {"tokenizer.chat_template": "chat_template", "tokenizer.ggml.add_bos_token": "add_bos_token",
                         "tokenizer.ggml.add_eos_token": "add_eos_token"}
# FileTokenizer's special token names -> the GGUF key of each one's id.
SPECIAL_TOKEN_KEYS = {"bos_token": "tokenizer.ggml.bos_token_id", "eos_token": "tokenizer.ggml.eos_token_id",
                      "unk_token": "tokenizer.ggml.unknown_token_id", "pad_token": "tokenizer.ggml.padding_token_id"}


def _metadata(index: GGUFIndex, key: str):
    value = index.metadata.get(key)
    return index.array(key) if value is None else value


def _by_transformers(gguf_path: Path, build):
    """`build(folder, name)` on a folder holding the file alone (transformers would read files beside it)."""
    with tempfile.TemporaryDirectory() as alone:
        (Path(alone) / gguf_path.name).symlink_to(Path(gguf_path).resolve())
        return build(alone, gguf_path.name)


def _is_plain(index: GGUFIndex) -> bool:
    return (index.metadata["general.architecture"] in PLAIN_CONFIG_ARCHITECTURES
            and index.metadata.get("general.name") != "mistral")


@functools.lru_cache(maxsize=4)
def _config(gguf_path: Path):
    index = open_gguf(gguf_path)
    if _is_plain(index):
        values = {"tie_word_embeddings": all(t.name != "output.weight" for t in index.tensors)}
        for key, name in LLAMA_KEYS.items():
            if key in index.metadata:
                values[name] = _metadata(index, key)
        if "vocab_size" not in values:
            values["vocab_size"] = index.array_length("tokenizer.ggml.tokens")
        return FileConfig(values)
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    config = _by_transformers(gguf_path, lambda folder, name: AutoConfig.from_pretrained(folder, gguf_file=name))
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # transformers' note that it dequantizes: hearth reads the weights itself
    if not getattr(config, "architectures", None):
        # By name: looking the class up would import its modeling module (seconds) before it is needed.
        config.architectures = [MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[config.model_type]]
    return config


def gguf_config(gguf_path: Path):
    """The config of the model in `gguf_path` (shared: do not modify): for plain llama a FileConfig of the
    values transformers reads from the file, else transformers' own config of its architecture's class."""
    return _config(Path(gguf_path).resolve())


def transformers_config(config):
    """`config` as its architecture's own transformers class (LlamaConfig for a plain llama file's), with that
    class's defaults for what the file does not say: what transformers' modules are built from."""
    if not isinstance(config, FileConfig):
        return config
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    values = {key: value for key, value in config.to_dict().items() if key != "model_type"}
    return CONFIG_MAPPING[config.model_type].from_dict(values)


def _tokenizer_fields(index: GGUFIndex) -> tuple[dict, dict]:
    """(tokenizer_dict, tokenizer_config) under the names transformers' GGUF converters read, with the
    special tokens' text, as transformers' get_gguf_tokenizer gives them."""
    tokenizer_dict = {name: _metadata(index, key) for key, name in TOKENIZER_KEYS.items() if key in index.metadata}
    tokenizer_config = {name: _metadata(index, key) for key, name in TOKENIZER_CONFIG_KEYS.items()
                        if key in index.metadata}
    # llama.cpp adds BOS to a sentencepiece vocabulary that does not say otherwise, and gemma4's template
    # writes its own.
    if tokenizer_dict.get("tokenizer_type") == "llama":
        tokenizer_config.setdefault("add_bos_token", True)
    elif tokenizer_dict.get("tokenizer_type") == "gemma4":
        tokenizer_config["add_bos_token"] = False
    for name, key in SPECIAL_TOKEN_KEYS.items():
        token_id = index.metadata.get(key)
        tokenizer_config[name] = tokenizer_dict["tokens"][token_id] if token_id is not None else None
    return tokenizer_dict, tokenizer_config


def _by_transformers_converter(architecture: str, tokenizer_dict: dict, tokenizer_config: dict) -> FileTokenizer:
    from transformers import PreTrainedTokenizerFast
    from transformers.integrations.gguf import convert_gguf_tokenizer

    backend, extra = convert_gguf_tokenizer(architecture, tokenizer_dict)
    built = PreTrainedTokenizerFast(tokenizer_object=backend, **tokenizer_config, **extra)
    special = {name: getattr(built, name) for name in SPECIAL_TOKEN_KEYS}
    return FileTokenizer(built.backend_tokenizer, special, built.chat_template)


def gguf_tokenizer(gguf_path: Path, native: bool = True) -> FileTokenizer:
    """The file's tokenizer (shared: do not modify), as transformers' AutoTokenizer.from_pretrained(gguf_file=)
    builds it, chat template and special tokens included; `native=False` builds its backend with transformers'
    converter even where byte_level_bpe would (what the tests compare with)."""
    return _tokenizer(Path(gguf_path).resolve(), native)


@functools.lru_cache(maxsize=4)
def _tokenizer(gguf_path: Path, native: bool) -> FileTokenizer:
    index = open_gguf(gguf_path)
    tokenizer_dict, tokenizer_config = _tokenizer_fields(index)
    kind, pre = tokenizer_dict.get("tokenizer_type"), tokenizer_dict.get("pre_tokenizer_type")
    if not (native and builds(kind, pre)):
        return _by_transformers_converter(index.metadata["general.architecture"], tokenizer_dict, tokenizer_config)
    special = {name: tokenizer_config[name] for name in SPECIAL_TOKEN_KEYS}
    backend = byte_level_bpe(tokenizer_dict["tokens"], tokenizer_dict["merges"], tokenizer_dict.get("token_type"),
                             pre)
    with_bos_eos(backend, special["bos_token"], special["eos_token"], bool(tokenizer_config.get("add_bos_token")),
                 bool(tokenizer_config.get("add_eos_token")))
    return FileTokenizer(backend, special, tokenizer_config.get("chat_template"))


def gguf_eos_token_ids(gguf_path: Path, tokenizer) -> tuple[int, ...]:
    """The ids that end a turn: the tokenizer's end-of-sequence token and the config's."""
    config = gguf_config(gguf_path)
    ids = {tokenizer.eos_token_id}
    value = config.eos_token_id
    ids.update(value if isinstance(value, list) else [value])
    return tuple(sorted(i for i in ids if i is not None))
