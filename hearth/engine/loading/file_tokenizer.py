"""A GGUF file's tokenizer: the tokenizers library's Tokenizer with the file's special tokens and chat template,
offering the part of transformers' PreTrainedTokenizerFast that hearth uses, with its results.

transformers' tokenizer classes import transformers, ~0.9 s of a ~3.5 s start for a 135M model (its package
init, then a scan of every model folder), and nothing of a GGUF's serving needs them. A Hugging Face folder
keeps transformers' AutoTokenizer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tokenizers import Tokenizer, processors

from hearth.engine.chat_template import ChatTemplate

SPECIAL_TOKEN_NAMES = ("bos_token", "eos_token", "unk_token", "pad_token")


def with_bos_eos(backend: Tokenizer, bos: str | None, eos: str | None, add_bos: bool, add_eos: bool) -> Tokenizer:
    """`backend` adding BOS before and EOS after a text where the file's flags say, the template transformers'
    update_post_processor writes (a flag without its token adds nothing)."""
    add_bos, add_eos = bool(add_bos and bos), bool(add_eos and eos)
    single = f"{bos + ':0 ' if add_bos else ''}$A:0{' ' + eos + ':0' if add_eos else ''}"
    pair = f"{single}{' ' + bos + ':1' if add_bos else ''} $B:1{' ' + eos + ':1' if add_eos else ''}"
    tokens = [(bos, backend.token_to_id(bos))] if add_bos else []
    tokens += [(eos, backend.token_to_id(eos))] if add_eos else []
    backend.post_processor = processors.TemplateProcessing(single=single, pair=pair, special_tokens=tokens)
    return backend


@dataclass(frozen=True)
class Encoding:
    input_ids: list[int]


class FileTokenizer:
    """encode/decode/apply_chat_template as transformers' tokenizer of the same file gives them.

    `special` maps bos_token, eos_token, unk_token and pad_token to the file's tokens (None where it names none).
    The backend's post-processor adds what `encode(add_special_tokens=True)` adds (with_bos_eos).
    """

    def __init__(self, backend: Tokenizer, special: dict[str, str | None], chat_template: str | None) -> None:
        self.backend_tokenizer = backend
        self._special = {name: special.get(name) for name in SPECIAL_TOKEN_NAMES}
        self.chat_template = chat_template
        self._template = ChatTemplate(chat_template) if chat_template else None

    bos_token = property(lambda self: self._special["bos_token"])
    eos_token = property(lambda self: self._special["eos_token"])
    unk_token = property(lambda self: self._special["unk_token"])
    pad_token = property(lambda self: self._special["pad_token"])
    bos_token_id = property(lambda self: self._id(self.bos_token))
    eos_token_id = property(lambda self: self._id(self.eos_token))
    unk_token_id = property(lambda self: self._id(self.unk_token))
    pad_token_id = property(lambda self: self._id(self.pad_token))

    def _id(self, token: str | None) -> int | None:
        return None if token is None else self.backend_tokenizer.token_to_id(token)

    @property
    def special_tokens_map(self) -> dict[str, str]:
        return {name: token for name, token in self._special.items() if token is not None}

    @property
    def all_special_tokens(self) -> list[str]:
        return list(dict.fromkeys(self.special_tokens_map.values()))

    @property
    def added_tokens_decoder(self) -> dict[int, Any]:
        return self.backend_tokenizer.get_added_tokens_decoder()

    def __len__(self) -> int:
        return self.backend_tokenizer.get_vocab_size(with_added_tokens=True)

    def get_vocab(self) -> dict[str, int]:
        return self.backend_tokenizer.get_vocab(with_added_tokens=True)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self.backend_tokenizer.encode(text, add_special_tokens=add_special_tokens).ids

    def __call__(self, text: str, add_special_tokens: bool = True) -> Encoding:
        return Encoding(self.encode(text, add_special_tokens=add_special_tokens))

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        ids = [ids] if isinstance(ids, int) else list(ids)
        return self.backend_tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

    def convert_ids_to_tokens(self, ids):
        if isinstance(ids, int):
            return self.backend_tokenizer.id_to_token(ids)
        return [self.backend_tokenizer.id_to_token(i) for i in ids]

    def convert_tokens_to_ids(self, tokens):
        if isinstance(tokens, str):
            return self.backend_tokenizer.token_to_id(tokens)
        return [self.backend_tokenizer.token_to_id(t) for t in tokens]

    def apply_chat_template(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None,
                            add_generation_prompt: bool = False, tokenize: bool = True, **variables: Any):
        """The rendered prompt (tokenize=False), or its ids without added special tokens (the template writes
        them), as transformers gives both."""
        if self._template is None:
            raise ValueError("this tokenizer has no chat template")
        text = self._template.render(messages, tools=tools, add_generation_prompt=add_generation_prompt,
                                     **{**self.special_tokens_map, **variables})
        return self.encode(text, add_special_tokens=False) if tokenize else text
