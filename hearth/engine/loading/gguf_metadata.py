"""A GGUF file's config, tokenizer (with its chat template) and end-of-turn ids, built in memory from the
file's own metadata: serving a .gguf writes nothing to disk.

transformers builds both from a GGUF itself (`gguf_file=`), but its readers walk the file's token and merge
arrays in Python (several seconds per start for a 49k-token vocabulary). These build the same objects
from hearth's own index of the file (gguf_file.GGUFIndex: the arrays decode in ~0.1 s) with transformers'
own tables: its GGUF key renames for the config and tokenizer, and its tokenizer converters. Architectures
whose config transformers builds with special cases (anything but plain llama) go through transformers'
own loader, slower but the same.

A plain llama file's config is transformers' base config class holding the renamed values, not LlamaConfig:
LlamaConfig's module imports transformers' activations, kernel hub and weight-conversion machinery
(torch.distributed.tensor, sympy, accelerate), ~1 s of every start, and the native forward reads only the
values. transformers_config() gives the architecture's own class where transformers' modules need it.
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

from hearth.engine.loading.gguf_file import GGUFIndex, open_gguf

# The architectures whose config is the plain rename of their metadata keys (transformers'
# load_gguf_checkpoint adds nothing else for them but tie_word_embeddings and the vocabulary size).
PLAIN_CONFIG_ARCHITECTURES = frozenset({"llama"})


def _metadata(index: GGUFIndex, key: str):
    value = index.metadata.get(key)
    return index.array(key) if value is None else value


def _by_transformers(gguf_path: Path, build):
    """`build(folder, name)` on a folder holding the file alone (transformers would read files beside it)."""
    with tempfile.TemporaryDirectory() as alone:
        (Path(alone) / gguf_path.name).symlink_to(Path(gguf_path).resolve())
        return build(alone, gguf_path.name)


@functools.lru_cache(maxsize=4)
def _config(gguf_path: Path):
    from transformers import AutoConfig
    from transformers.configuration_utils import PreTrainedConfig
    from transformers.integrations.ggml import GGUF_CONFIG_DEFAULTS_MAPPING, GGUF_CONFIG_MAPPING
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    index = open_gguf(gguf_path)
    architecture = index.metadata["general.architecture"]
    if architecture not in PLAIN_CONFIG_ARCHITECTURES or index.metadata.get("general.name") == "mistral":
        config = _by_transformers(gguf_path, lambda folder, name: AutoConfig.from_pretrained(folder, gguf_file=name))
    else:
        values = {"tie_word_embeddings": all(t.name != "output.weight" for t in index.tensors),
                  **GGUF_CONFIG_DEFAULTS_MAPPING.get(architecture, {})}
        for key in index.metadata:
            prefix, _, rest = key.partition(".")
            renamed = GGUF_CONFIG_MAPPING.get(prefix, {}).get(rest)
            if renamed is not None and renamed != -1:
                values[renamed] = _metadata(index, key)
        if "vocab_size" not in values:
            values["vocab_size"] = index.array_length("tokenizer.ggml.tokens")
        config = PreTrainedConfig(**values)
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # transformers' note that it dequantizes: hearth reads the weights itself
    if not getattr(config, "architectures", None):
        # By name: looking the class up would import its modeling module (seconds) before it is needed.
        config.architectures = [MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[config.model_type]]
    return config


def gguf_config(gguf_path: Path):
    """The config of the model in `gguf_path` (shared: do not modify): transformers' own for the file, as its
    architecture's class or, for plain llama, as the base class holding the same values."""
    return _config(Path(gguf_path).resolve())


def transformers_config(config):
    """`config` as its architecture's own transformers class (LlamaConfig for a plain llama file's), with that
    class's defaults for what the file does not say: what transformers' modules are built from."""
    from transformers.configuration_utils import PreTrainedConfig

    if type(config) is not PreTrainedConfig:
        return config
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    # The base class writes its own (empty) model_type into the dict.
    values = {key: value for key, value in config.to_dict().items() if key != "model_type"}
    return CONFIG_MAPPING[config.model_type].from_dict(values)


def gguf_tokenizer(gguf_path: Path):
    """The file's tokenizer, as transformers' AutoTokenizer.from_pretrained(gguf_file=) builds it, chat template
    and special tokens included."""
    from transformers import PreTrainedTokenizerFast
    from transformers.integrations.gguf import GGUF_TOKENIZER_MAPPING, convert_gguf_tokenizer
    from transformers.integrations.gguf.gguf_tokenizer_mapping import _SPECIAL_TOKENS

    index = open_gguf(gguf_path)
    grouped = {group: {name: _metadata(index, f"tokenizer.{key}") for key, name in renames.items()
                       if f"tokenizer.{key}" in index.metadata}
               for group, renames in GGUF_TOKENIZER_MAPPING.items()}
    tokenizer_dict, tokenizer_config = grouped["tokenizer"], grouped["tokenizer_config"]
    # As transformers' get_gguf_tokenizer: llama.cpp adds BOS to a sentencepiece vocabulary that does not say
    # otherwise, and gemma4's template writes its own.
    if tokenizer_dict.get("tokenizer_type") == "llama":
        tokenizer_config.setdefault("add_bos_token", True)
    elif tokenizer_dict.get("tokenizer_type") == "gemma4":
        tokenizer_config["add_bos_token"] = False
    for name, key in _SPECIAL_TOKENS.items():
        token_id = index.metadata.get(f"tokenizer.ggml.{key}")
        tokenizer_config[name] = tokenizer_dict["tokens"][token_id] if token_id is not None else None
    backend, extra = convert_gguf_tokenizer(index.metadata["general.architecture"], tokenizer_dict)
    return PreTrainedTokenizerFast(tokenizer_object=backend, **tokenizer_config, **extra)


def gguf_eos_token_ids(gguf_path: Path, tokenizer) -> tuple[int, ...]:
    """The ids that end a turn: the tokenizer's end-of-sequence token and the config's."""
    config = gguf_config(gguf_path)
    ids = {tokenizer.eos_token_id}
    value = config.eos_token_id
    ids.update(value if isinstance(value, list) else [value])
    return tuple(sorted(i for i in ids if i is not None))
