"""The output of a batch run: OpenAI's batch output lines, {"id", "custom_id", "response", "error"}, appended
and flushed one by one as requests finish, so a killed run loses at most the line it was writing.

Opening an existing file resumes it: the custom_ids already answered are read back (a last line cut off
mid-write is dropped first, its request runs again).
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

from hearth.server.errors import APIError


class ResultsFileError(ValueError):
    """The output file exists but is not a batch output file."""


def record(custom_id: str | None, status: int, body: dict[str, Any], request_id: str | None = None) -> dict[str, Any]:
    """One output line. `response` is what the server would have answered (status and body); `error` repeats
    a failed request's code and message, so failures are found without reading the status."""
    error = None
    if status != 200:
        error = {"code": body["error"]["code"], "message": body["error"]["message"]}
    return {
        "id": f"batch_req_{uuid.uuid4().hex}",
        "custom_id": custom_id,
        "response": {"status_code": status, "request_id": request_id or f"req_{uuid.uuid4().hex}", "body": body},
        "error": error,
    }


def error_record(custom_id: str | None, error: APIError) -> dict[str, Any]:
    return record(custom_id, error.status, error.body())


class ResultsFile:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.done_ids: set[str] = set()
        self.num_anonymous_done = 0
        if self.path.exists():
            self._read_back()
        self._file = self.path.open("ab")

    def _read_back(self) -> None:
        offset = 0
        with self.path.open("rb+") as f:
            for number, line in enumerate(f, start=1):
                if not line.endswith(b"\n"):  # the last record was cut off mid-write
                    f.truncate(offset)
                    break
                offset += len(line)
                if line.strip():
                    self._add_done(number, line)

    def _add_done(self, number: int, line: bytes) -> None:
        try:
            raw = json.loads(line)
            custom_id = raw["custom_id"]
            raw["response"]["status_code"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ResultsFileError(f"{self.path} line {number} is not a batch output record ({exc}); "
                                   "give another output file") from None
        if custom_id is None:
            self.num_anonymous_done += 1
        else:
            self.done_ids.add(custom_id)

    def write(self, line: dict[str, Any]) -> None:
        self._file.write(json.dumps(line, ensure_ascii=False).encode("utf-8") + b"\n")
        self._file.flush()

    def sync(self) -> None:
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> ResultsFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
