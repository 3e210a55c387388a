"""The legacy completion logprobs: parallel lists of token texts, their logprobs, their top alternatives
(token text -> logprob, the chosen token among them) and their character offsets in the choice's text."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from hearth.engine.output.token_text import TokenText
from hearth.engine.scheduling.sequence import TokenLogprobs
from hearth.server.chat.adapter import MIN_LOGPROB


def _clamp(logprob: float) -> float:
    return MIN_LOGPROB if math.isnan(logprob) else max(logprob, MIN_LOGPROB)


@dataclass
class LegacyLogprobs:
    """A choice's logprobs, grown token by token; `offset` is where the next token's text starts."""

    token_text: TokenText
    offset: int = 0
    tokens: list[str] = field(default_factory=list)
    token_logprobs: list[float | None] = field(default_factory=list)
    top_logprobs: list[dict[str, float] | None] = field(default_factory=list)
    text_offset: list[int] = field(default_factory=list)

    def add_unscored(self, token_id: int) -> None:
        """A token nothing precedes (a prompt's first): OpenAI gives it no logprob."""
        self._add(self.token_text.get(token_id)[0], None, None)

    def add(self, record: TokenLogprobs) -> None:
        text = self.token_text.get(record.token_id)[0]
        top = {self.token_text.get(t)[0]: _clamp(lp) for t, lp in record.top}
        top.setdefault(text, _clamp(record.logprob))  # up to logprobs + 1 entries, as OpenAI's
        self._add(text, _clamp(record.logprob), top)

    def extend(self, records: list[TokenLogprobs]) -> None:
        for record in records:
            self.add(record)

    def _add(self, text: str, logprob: float | None, top: dict[str, float] | None) -> None:
        self.tokens.append(text)
        self.token_logprobs.append(logprob)
        self.top_logprobs.append(top)
        self.text_offset.append(self.offset)
        self.offset += len(text)

    def body(self, since: int = 0) -> dict[str, Any]:
        """The entries from token `since` on (a streamed chunk's)."""
        return {"tokens": self.tokens[since:], "token_logprobs": self.token_logprobs[since:],
                "top_logprobs": self.top_logprobs[since:], "text_offset": self.text_offset[since:]}

    def __len__(self) -> int:
        return len(self.tokens)
