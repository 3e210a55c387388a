"""The exact bytes and display text of single tokens, for logprobs."""

from __future__ import annotations

import functools
import re

from hearth.engine.loading.byte_level_bpe import bytes_to_unicode


@functools.lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's bytes_to_unicode table used by byte-level BPE vocabularies."""
    return {char: byte for byte, char in bytes_to_unicode().items()}


_BYTE_FALLBACK = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


class TokenText:
    """token id -> (text, bytes); text shows undecodable byte fragments as \\xNN escapes."""

    def __init__(self, tokenizer) -> None:
        backend = tokenizer.backend_tokenizer
        decoder = backend.decoder
        self._is_byte_level = decoder is not None and "ByteLevel" in str(decoder)
        self._special = {t.content for t in backend.get_added_tokens_decoder().values()}
        self._tokens = tokenizer.convert_ids_to_tokens
        self._cache: dict[int, tuple[str, bytes]] = {}

    def _bytes(self, token: str) -> bytes:
        if token in self._special:
            return token.encode()
        if self._is_byte_level:
            table = _byte_decoder()
            if all(c in table for c in token):
                return bytes(table[c] for c in token)
            return token.encode()
        match = _BYTE_FALLBACK.match(token)
        if match:
            return bytes([int(match.group(1), 16)])
        return token.replace("\u2581", " ").encode()

    def get(self, token_id: int) -> tuple[str, bytes]:
        cached = self._cache.get(token_id)
        if cached is None:
            token = self._tokens(token_id)
            raw = self._bytes(token if token is not None else "")
            cached = (raw.decode("utf-8", errors="backslashreplace"), raw)
            self._cache[token_id] = cached
        return cached
