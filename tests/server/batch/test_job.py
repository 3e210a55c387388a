"""A killed batch run, resumed with the same output file, ends with the records of an uninterrupted one."""

from __future__ import annotations

import json

import pytest

from hearth.server.batch.job import BatchJob
from hearth.server.batch.requests_file import DuplicateIdError
from hearth.server.batch.results_file import ResultsFile
from tests.server.batch.conftest import chat, comparable, line, read_records, write_lines

LINES = [line(f"q{i}", chat(f"Give me a word that starts with {letter}.", max_completion_tokens=4,
                            **({"temperature": 0} if i % 2 else {"temperature": 0.8, "seed": i})))
         for i, letter in enumerate("abcdefghijkl")]
LINES += ['{"custom_id": "cut", "body": ', "[]"]  # an error record with an id, one without


def by_id(records: list[dict]) -> dict:
    assert len(records) == len({r["custom_id"] for r in records if r["custom_id"] is not None}) + sum(
        r["custom_id"] is None for r in records), "a custom_id has two records"
    return {r["custom_id"]: (r["response"]["status_code"], comparable(r["response"]["body"]), r["error"])
            for r in records}


def test_a_killed_run_resumes_to_the_records_of_an_uninterrupted_one(tmp_path, lone_runner, monkeypatch):
    """On lone_runner, so that the run stays short; batched runs give the same tokens (test_runner.py)."""
    batch_runner = lone_runner
    source = write_lines(tmp_path / "requests.jsonl", LINES)
    whole = BatchJob(source, tmp_path / "whole.jsonl").run(batch_runner, is_quiet=True)
    assert whole.is_complete and whole.num_written == len(LINES)

    written = []
    write = ResultsFile.write

    def dies_on_the_seventh_record(self, record):
        if len(written) == 6:  # killed halfway through writing it
            self._file.write(json.dumps(record).encode()[:50])
            self._file.flush()
            raise KeyboardInterrupt
        written.append(record)
        write(self, record)

    monkeypatch.setattr(ResultsFile, "write", dies_on_the_seventh_record)
    killed = BatchJob(source, tmp_path / "resumed.jsonl")
    with pytest.raises(KeyboardInterrupt):
        killed.run(batch_runner, is_quiet=True)
    assert killed.summary.num_written == 6 and not killed.summary.is_complete
    assert not batch_runner.engine.has_unfinished_requests()  # what was running was aborted
    monkeypatch.setattr(ResultsFile, "write", write)

    resumed = BatchJob(source, tmp_path / "resumed.jsonl")
    assert resumed.summary.num_skipped == 6
    summary = resumed.run(batch_runner, is_quiet=True)
    assert summary.is_complete and summary.num_written == len(LINES) - 6
    assert by_id(read_records(tmp_path / "resumed.jsonl")) == by_id(read_records(tmp_path / "whole.jsonl"))

    again = BatchJob(source, tmp_path / "resumed.jsonl")
    assert again.summary.num_remaining == 0 and again.summary.num_skipped == len(LINES)


def test_duplicate_custom_ids_are_refused_before_anything_runs(tmp_path):
    source = write_lines(tmp_path / "requests.jsonl", [line("a", chat("x")), line("b", chat("y")), line("a", chat("z")),
                                                       line("b", chat("w")), line("b", chat("v"))])
    with pytest.raises(DuplicateIdError, match=r"2 custom_id\(s\) appear more than once: 'a' on lines 1, 3; "
                                               r"'b' on lines 2, 4, 5"):
        BatchJob(source, tmp_path / "results.jsonl")
    assert not (tmp_path / "results.jsonl").exists()


def test_an_output_file_that_is_not_batch_records_is_refused(tmp_path):
    source = write_lines(tmp_path / "requests.jsonl", [line("a", chat("x"))])
    other = tmp_path / "notes.jsonl"
    other.write_text('{"hello": 1}\n')
    with pytest.raises(ValueError, match="line 1 is not a batch output record"):
        BatchJob(source, other)
    assert other.read_text() == '{"hello": 1}\n'
