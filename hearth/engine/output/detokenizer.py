"""Incremental detokenization and stop strings.

Text grows through the tokenizers library's DecodeStream, which holds back bytes of an unfinished UTF-8
character, so no partial character is ever released. Stop strings are matched in the text, also across
token boundaries; the matched stop string and everything after it are dropped. While streaming, the tail
of the text that could still grow into a stop string is held back until it can't.
"""

from __future__ import annotations

from tokenizers import Tokenizer
from tokenizers.decoders import DecodeStream


class IncrementalDetokenizer:
    def __init__(self, tokenizer: Tokenizer, stop: tuple[str, ...] = (), skip_special_tokens: bool = True) -> None:
        self._tokenizer = tokenizer
        self._stream = DecodeStream(skip_special_tokens=skip_special_tokens)
        self.stop = stop
        self._max_stop_len = max((len(s) for s in stop), default=0)
        self.text = ""
        self.num_released = 0
        self.is_stopped = False

    def append(self, token_id: int, check_stop: bool = True) -> bool:
        """Add a token's text; returns True when a stop string has just been matched (only looked
        for when check_stop, e.g. once min_tokens are out)."""
        if self.is_stopped:
            return True
        piece = self._stream.step(self._tokenizer, token_id)
        if not piece:
            return False
        search_from = max(0, len(self.text) - self._max_stop_len + 1)
        self.text += piece
        if not self.stop or not check_stop:
            return False
        match = min((i for i in (self.text.find(s, search_from) for s in self.stop) if i >= 0), default=-1)
        if match < 0:
            return False
        self.text = self.text[:match]
        self.is_stopped = True
        return True

    def _num_held(self) -> int:
        """Length of the longest text suffix that is a proper prefix of a stop string."""
        if self.is_stopped or not self.stop:
            return 0
        longest = 0
        for stop in self.stop:
            for size in range(min(len(stop) - 1, len(self.text)), longest, -1):
                if self.text.endswith(stop[:size]):
                    longest = size
                    break
        return longest

    def release(self, is_final: bool = False) -> str:
        """Text not released before that can no longer become part of a stop string."""
        end = len(self.text) if is_final else len(self.text) - self._num_held()
        end = max(end, self.num_released)
        delta = self.text[self.num_released:end]
        self.num_released = end
        return delta
