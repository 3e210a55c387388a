"""A batch job: one input file answered into one output file, resumed where an earlier run stopped."""

from __future__ import annotations

import sys
import time
from collections import Counter
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from hearth.server.batch.requests_file import RequestsFile
from hearth.server.batch.results_file import ResultsFile
from hearth.server.batch.runner import BatchResult, BatchRunner

# Seconds between refreshes of the progress bar's tokens/s.
_POSTFIX_INTERVAL = 0.5


@dataclass
class BatchSummary:
    output: Path
    num_lines: int
    num_skipped: int  # answered by an earlier run
    num_stale: int  # records in the output for custom_ids the input does not have
    num_written: int = 0
    statuses: Counter = field(default_factory=Counter)
    num_completion_tokens: int = 0
    seconds: float = 0.0

    @property
    def num_remaining(self) -> int:
        return self.num_lines - self.num_skipped - self.num_written

    @property
    def is_complete(self) -> bool:
        return self.num_remaining == 0

    def add(self, result: BatchResult) -> None:
        self.num_written += 1
        self.statuses[result.status] += 1
        self.num_completion_tokens += result.num_completion_tokens

    def text(self) -> str:
        failed = sum(n for status, n in self.statuses.items() if status != 200)
        by_status = ", ".join(f"{status}: {n}" for status, n in sorted(self.statuses.items()) if status != 200)
        lines = [
            f"{self.output}: {self.num_lines - self.num_remaining} of {self.num_lines} lines answered "
            f"({self.num_skipped} by an earlier run, {self.num_written} now: {self.statuses[200]} ok, {failed} failed"
            + (f" ({by_status})" if by_status else "") + ")",
        ]
        if self.num_written:
            seconds = max(self.seconds, 1e-9)
            lines.append(f"{self.num_completion_tokens} completion tokens in {self.seconds:.1f} s: "
                         f"{self.num_written / seconds:.2f} req/s, {self.num_completion_tokens / seconds:.1f} tok/s")
        if self.num_remaining:
            lines.append(f"{self.num_remaining} lines not answered yet: run the same command again to resume")
        if self.num_stale:
            lines.append(f"warning: {self.num_stale} records in {self.output} have custom_ids the input does not have")
        return "\n".join(lines)


class BatchJob:
    def __init__(self, input_path: str | Path, output_path: str | Path) -> None:
        """Scans the input (DuplicateIdError) and reads back what the output already answers."""
        input_path, output_path = Path(input_path), Path(output_path)
        if output_path.exists() and output_path.resolve() == input_path.resolve():
            raise ValueError(f"the output file is the input file ({input_path}); give another output file")
        self.requests = RequestsFile.scan(input_path)
        self.results = ResultsFile(output_path)
        self.done_ids = self.results.done_ids & self.requests.custom_ids
        self.num_anonymous_done = min(self.results.num_anonymous_done, self.requests.num_anonymous)
        self.summary = BatchSummary(
            output=output_path,
            num_lines=self.requests.num_lines,
            num_skipped=len(self.done_ids) + self.num_anonymous_done,
            num_stale=len(self.results.done_ids - self.requests.custom_ids),
        )

    def run(self, runner: BatchRunner, is_quiet: bool = False) -> BatchSummary:
        """Answers the remaining lines; each record is appended and flushed as its request finishes."""
        summary = self.summary
        progress = tqdm(total=summary.num_remaining, unit="req", disable=is_quiet, file=sys.stderr, dynamic_ncols=True)
        start = last_postfix = time.perf_counter()
        try:
            lines = self.requests.lines(self.done_ids, self.num_anonymous_done)
            with closing(runner.run(lines)) as results, progress:
                for result in results:
                    self.results.write(result.record)
                    summary.add(result)
                    progress.update()
                    now = time.perf_counter()
                    if now - last_postfix >= _POSTFIX_INTERVAL or progress.n == progress.total:
                        progress.set_postfix_str(f"{summary.num_completion_tokens / (now - start):.0f} tok/s", refresh=False)
                        last_postfix = now
        finally:
            summary.seconds = time.perf_counter() - start
            self.results.close()
        return summary
