"""python -m hearth.server.batch: answer a file of OpenAI Batch API requests offline, through the server's adapter
and engine with no HTTP.

Each input line is {"custom_id", "method": "POST", "url", "body": {...}}, url /v1/chat/completions,
/v1/completions or /v1/responses, the body answered as the server answers it non-streamed; each
output line {"id", "custom_id", "response": {"status_code", "request_id", "body"}, "error"}, in completion
order. Re-running with the same output file skips the custom_ids it already has. Exit status: 0 when every
line has a record (whatever its status), 1 when some have none, 2 when the files are refused, 130 when
interrupted.

Example:
  python -m hearth.server.batch -i requests.jsonl -o results.jsonl
"""

from __future__ import annotations

import argparse
import logging
import sys

import hearth.engine  # noqa: F401  (forces HF offline before anything else imports transformers)
from hearth.server.engine_options import add_engine_options, resolve_entry, start_engine


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="hearth batch", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("-i", "--input", required=True, help="OpenAI Batch API input file (JSONL)")
    parser.add_argument("-o", "--output", required=True, help="output file (JSONL), appended to and resumed")
    parser.add_argument("--quiet", action="store_true", help="no progress bar (the summary is still printed)")
    add_engine_options(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from hearth.engine.loading.registry import ModelNotFoundError
    from hearth.server.batch.job import BatchJob
    from hearth.server.batch.runner import BatchRunner
    from hearth.server.chat.completion import chat_adapter

    try:
        job = BatchJob(args.input, args.output)
        if job.summary.num_remaining:
            entry = resolve_entry(args)
    except (ModelNotFoundError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if job.summary.num_remaining:
        try:
            engine_ = start_engine(args, entry)  # torchrun: ranks other than 0 only run the forward, then exit
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        try:
            job.run(BatchRunner(engine_, chat_adapter(engine_, entry)), is_quiet=args.quiet)
        except KeyboardInterrupt:
            print(job.summary.text(), file=sys.stderr)
            return 130
        except Exception as exc:
            if engine_.failure is None:
                raise
            print(f"error: {exc}\n{job.summary.text()}", file=sys.stderr)
            return 1
        finally:
            engine_.close()
    print(job.summary.text(), file=sys.stderr)
    return 0 if job.summary.is_complete else 1


if __name__ == "__main__":
    raise SystemExit(main())
