"""A byte-level BPE vocabulary (GGUF `tokenizer.ggml.model = gpt2`: Llama 3, SmolLM, Qwen2 and most BPE models
since) as the tokenizers library's Tokenizer, built as transformers' GGUF converter builds it
(`transformers.integrations.gguf.gguf_tokenizer_mapping`: byte_level_tokenizer, add_gguf_special_tokens,
set_split_regex) without importing transformers.

Only the pre-tokenizer kinds named below are built here: a file naming another gets None, and
gguf_metadata goes through transformers' own converter, slower and the same. tests/engine/loading/
test_gguf_metadata.py checks each kind's backend against transformers' as JSON, and these tables against its.
"""

from __future__ import annotations

import functools

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
# `tokenizer.ggml.pre` -> the regex its merges were learned over (transformers' GGUF_PRE_TOKENIZER_SPLITS);
# None: GPT-2's own pre-tokenizer, which transformers keeps for a name it has no split for.
PRE_TOKENIZER_SPLITS = {
    "llama3": _LLAMA3_SPLIT, "llama-v3": _LLAMA3_SPLIT, "llama-bpe": _LLAMA3_SPLIT, "smaug-bpe": _LLAMA3_SPLIT,
    "qwen2": _QWEN2_SPLIT, "deepseek-r1-qwen": _QWEN2_SPLIT,
    "gpt-2": None, "gpt2": None, "default": None, "smollm": None, "starcoder": None, "refact": None,
}
# llama.cpp's token types (gguf.TokenType) that become added tokens.
CONTROL, USER_DEFINED = 3, 4


@functools.cache
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table (the alphabet a byte-level vocabulary is spelled in)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, codes)))


def builds(tokenizer_type: str | None, pre_tokenizer_type: str | None) -> bool:
    """Whether byte_level_bpe builds this file's tokenizer (else transformers' converter does)."""
    return tokenizer_type == "gpt2" and (pre_tokenizer_type is None or pre_tokenizer_type in PRE_TOKENIZER_SPLITS)


def byte_level_bpe(tokens: list[str], merges: list[str], token_types: list[int] | None,
                   pre_tokenizer_type: str | None) -> Tokenizer:
    """The backend for a vocabulary `builds` accepts: tokens and `"a b"` merges as the file lists them."""
    spelling = bytes_to_unicode()
    alphabet = frozenset(spelling.values())
    vocab = {}
    for index, token in enumerate(tokens):
        # Tokens the file writes in plain text (added ones) are spelled in the byte alphabet, as GPT-2's are.
        vocab[token if alphabet.issuperset(token) else "".join(spelling[b] for b in token.encode("utf-8"))] = index
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[tuple(merge.split(" ")) for merge in merges],
                                     dropout=None, continuing_subword_prefix="", end_of_word_suffix="",
                                     fuse_unk=False, byte_fallback=False))
    split = PRE_TOKENIZER_SPLITS.get(pre_tokenizer_type)
    if split is None:
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    else:
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(split), behavior="isolated"),
                                                           pre_tokenizers.ByteLevel(add_prefix_space=False,
                                                                                    use_regex=False)])
    tokenizer.decoder = decoders.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)
    types = token_types or ()
    # A control token spelled outside the byte alphabet is a llama.cpp mislabel: added, it would grow the
    # vocabulary past the model's rows (transformers skips it too).
    control = [AddedToken(token, normalized=False, special=True)
               for token, kind in zip(tokens, types) if kind == CONTROL and alphabet.issuperset(token)]
    if control:
        tokenizer.add_special_tokens(control)
    user_defined = [AddedToken(token, normalized=False, special=False)
                    for token, kind in zip(tokens, types) if kind == USER_DEFINED and token in vocab]
    if user_defined:
        tokenizer.add_tokens(user_defined)
    return tokenizer
