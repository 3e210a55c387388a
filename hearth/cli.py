"""The `hearth` command: `hearth serve`, `hearth batch`, `hearth sweep`, `hearth fetch` and `hearth kernels`.

Each subcommand takes the options of its module (`hearth serve --help` lists those of `python -m
hearth.server`), like `vllm serve`, `llama-server` and `ollama serve`.
"""

from __future__ import annotations

import sys

USAGE = """usage: hearth COMMAND [OPTIONS]

commands:
  serve     serve a model over the OpenAI API (python -m hearth.server)
  batch     answer a file of OpenAI Batch API requests offline (python -m hearth.server.batch)
  sweep     a grid of sampling settings over a prompt set, measured and drawn (python -m hearth.server.sweep)
  fetch     fetch and convert the registry's models that have a set-up source (python -m hearth.engine.loading.fetch)
  kernels   the CPU level and each kernel family's level here; --build builds the C kernels first

`hearth COMMAND --help` lists a command's options."""


def _kernels(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="hearth kernels", description="The kernel families and their CPU levels.")
    parser.add_argument("--build", action="store_true", help="build the C kernels; exit 1 if one cannot be built")
    args = parser.parse_args(argv)
    from hearth.kernels.report import kernel_families, report_lines

    for line in report_lines():
        print(line)
    # --build fails only on a build or compiler error: a CPU below a family's level is not an error.
    return 1 if args.build and any(family.build_failed for family in kernel_families()) else 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "serve":
        from hearth.server.__main__ import main as run
    elif command == "batch":
        from hearth.server.batch.__main__ import main as run
    elif command == "sweep":
        try:
            from hearth.server.sweep.__main__ import main as run
        except ImportError as exc:
            print(f"error: hearth sweep needs the sweep extra (pip install 'hearth[sweep]'): {exc}", file=sys.stderr)
            return 2
    elif command == "fetch":
        from hearth.engine.loading.fetch import main as run
    elif command == "kernels":
        run = _kernels
    else:
        print(f"error: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    return run(rest)


if __name__ == "__main__":
    raise SystemExit(main())
