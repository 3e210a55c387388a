"""The input of a batch run: OpenAI Batch API lines, {"custom_id", "method", "url", "body"}, read as a stream.

A first pass collects the custom_ids (duplicates are refused before anything runs) and counts the lines;
the second yields one BatchLine at a time, so the file is never held whole. Blank lines separate nothing
and are skipped, as JSONL readers do.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hearth.server.errors import APIError

# The paths a batch line may name, as OpenAI's Batch API takes them: each answered as the server answers it.
URLS = ("/v1/chat/completions", "/v1/completions", "/v1/responses")
LINE_FIELDS = ("custom_id", "method", "url", "body")
# Recovers the custom_id of a line that is not valid JSON, so its error record can still name it.
_CUSTOM_ID = re.compile(r'"custom_id"\s*:\s*("(?:[^"\\]|\\.)*")')


class DuplicateIdError(ValueError):
    """The input names a custom_id more than once."""


@dataclass(frozen=True)
class BatchLine:
    number: int  # 1-based line number in the input file
    custom_id: str | None
    body: Any = None
    url: str = URLS[0]
    # Set when the line itself (not its body) is unusable: its record carries this error.
    error: APIError | None = None


def _recovered_id(text: str) -> str | None:
    match = _CUSTOM_ID.search(text)
    if match is None:
        return None
    try:
        return json.loads(match.group(1))
    except ValueError:
        return None


def parse_line(number: int, data: bytes) -> BatchLine:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return BatchLine(number, _recovered_id(data.decode("utf-8", "replace")),
                         error=APIError(400, f"line {number} is not valid UTF-8: {exc}", code="invalid_json"))
    try:
        raw = json.loads(text)
    except ValueError as exc:
        return BatchLine(number, _recovered_id(text),
                         error=APIError(400, f"line {number} is not valid JSON: {exc}", code="invalid_json"))
    if not isinstance(raw, dict):
        return BatchLine(number, None, error=APIError(
            400, f"line {number} must be a JSON object with {', '.join(LINE_FIELDS)}", code="invalid_batch_line"))
    custom_id = raw.get("custom_id")
    if not isinstance(custom_id, str):
        message = "has no custom_id" if custom_id is None else f"has a custom_id that is not a string: {custom_id!r}"
        return BatchLine(number, None, error=APIError(400, f"line {number} {message}", param="custom_id",
                                                      code="invalid_batch_line"))
    unknown = sorted(set(raw) - set(LINE_FIELDS))
    if unknown:
        return BatchLine(number, custom_id, error=APIError(
            400, f"line {number}: unrecognized batch line field(s) {', '.join(unknown)}; a line has "
            f"{', '.join(LINE_FIELDS)}", param=unknown[0], code="unrecognized_argument"))
    # What the server answers a request to another path or with another method.
    if raw.get("url") not in URLS:
        return BatchLine(number, custom_id, error=APIError(404, "Not Found", code="not_found"))
    if raw.get("method") != "POST":
        return BatchLine(number, custom_id, error=APIError(405, "Method Not Allowed"))
    return BatchLine(number, custom_id, raw.get("body"), url=raw["url"])


@dataclass(frozen=True)
class RequestsFile:
    path: Path
    num_lines: int
    custom_ids: frozenset[str]
    # Lines whose custom_id cannot be read; their error records carry custom_id null.
    num_anonymous: int

    @classmethod
    def scan(cls, path: str | Path) -> RequestsFile:
        """The first pass; DuplicateIdError names every custom_id given twice, with its line numbers."""
        path = Path(path)
        seen: dict[str, int] = {}
        duplicates: dict[str, list[int]] = {}
        num_lines = num_anonymous = 0
        for number, data in _lines(path):
            num_lines += 1
            custom_id = parse_line(number, data).custom_id
            if custom_id is None:
                num_anonymous += 1
            elif custom_id in seen:
                duplicates.setdefault(custom_id, [seen[custom_id]]).append(number)
            else:
                seen[custom_id] = number
        if duplicates:
            shown = "; ".join(f"{cid!r} on lines {', '.join(map(str, lines))}" for cid, lines in list(duplicates.items())[:10])
            more = f" (and {len(duplicates) - 10} more)" if len(duplicates) > 10 else ""
            raise DuplicateIdError(f"{path}: {len(duplicates)} custom_id(s) appear more than once: {shown}{more}")
        return cls(path, num_lines, frozenset(seen), num_anonymous)

    def lines(self, done_ids: set[str] | frozenset[str] = frozenset(), num_anonymous_done: int = 0) -> Iterator[BatchLine]:
        """The second pass, without the lines a previous run already answered. Anonymous lines are answered
        the moment they are read, in file order, so the ones done are the first num_anonymous_done."""
        num_anonymous_seen = 0
        for number, data in _lines(self.path):
            line = parse_line(number, data)
            if line.custom_id is None:
                num_anonymous_seen += 1
                if num_anonymous_seen <= num_anonymous_done:
                    continue
            elif line.custom_id in done_ids:
                continue
            yield line


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    with path.open("rb") as f:
        for number, data in enumerate(f, start=1):
            if data.strip():
                yield number, data
