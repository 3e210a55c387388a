"""Sampling-parameter sweep: a grid of settings over a prompt set; each cell's answers measured, tabled and drawn.

Axes come from flags or a YAML file (--grid; flags win), e.g.
  hearth sweep --temperature 0.5 1.0 --top-p 0.9 1.0 --seeds 1 2 --max-tokens 8 --out DIR
A cell is one setting of every axis; it runs every prompt once per seed, all at once. Per cell:
distinct-1/2 across seeds, repeated 3-gram rate within an answer, mean length, rate of hitting max_tokens,
mean raw logprob per token, JSON-valid rate (with --json-schema), tok/s (hearth.server.sweep.metrics).
Writes DIR/sweep.csv, DIR/seeds.csv, DIR/heatmaps.png (each metric over the two main axes, means over the
rest) and DIR/seeds.png (per-seed lines over the first main axis). --check-reproducible reruns a sample of
cells shuffled together, so batched with other neighbours, and reports every cell whose tokens changed.
In-process engine by default (the options of `python -m hearth.server`), or --url of a running server.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import math
import random
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from hearth.server.sweep.metrics import Answer, answer_metrics, cell_metrics

AXES = ("temperature", "top_p", "top_k", "min_p", "frequency_penalty", "presence_penalty", "repetition_penalty")
METRICS = ("distinct_1", "distinct_2", "repeated_ngram_rate", "mean_tokens", "max_tokens_rate", "mean_logprob",
           "json_valid_rate", "tok_s")
SEED_METRICS = ("repeated_ngram_rate", "mean_tokens", "max_tokens_rate", "mean_logprob", "json_valid_rate")
DEFAULT_PROMPTS = (
    "Write one sentence about the sea.", "Describe a cat in a few words.", "Give me a name for a bakery.",
    "What should I cook tonight?", "Tell me a fact about the Moon.", "Invent a word and define it.",
    "Start a short story.", "Describe your ideal weekend.", "Suggest a hobby for a rainy day.",
    "What is a good name for a dog?", "Write a line of a poem about autumn.", "Describe the colour blue.",
    "Give advice to a new student.", "Name a place you would like to visit and why.", "Describe a busy market.",
    "What makes a good friend?", "Write a slogan for a bicycle shop.", "Describe the taste of an apple.",
    "Tell me something about trees.", "Write the first line of a letter to a friend.",
)


@dataclass(frozen=True)
class SweepGrid:
    axes: tuple[tuple[str, tuple[float, ...]], ...]
    seeds: tuple[int, ...]
    max_tokens: int

    def __post_init__(self) -> None:
        for name, values in self.axes:
            if name not in AXES:
                raise ValueError(f"axis must be one of {', '.join(AXES)}, got {name!r}")
            if not values:
                raise ValueError(f"axis {name} needs at least one value")
        if not self.seeds:
            raise ValueError("seeds needs at least one seed")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")

    def cells(self) -> list[dict[str, float]]:
        names = [name for name, _ in self.axes]
        return [dict(zip(names, values)) for values in itertools.product(*(v for _, v in self.axes))]

    def main_axes(self) -> list[str]:
        """The first two axes that vary (then any given axis), in AXES order."""
        varying = [name for name, values in self.axes if len(values) > 1]
        return (varying + [name for name, _ in self.axes if name not in varying])[:2]


def load_prompts(path: str | None) -> list[str]:
    """A .txt file (one prompt a line) or .jsonl ({"prompt": ...} a line); the built-in set when None."""
    if path is None:
        return list(DEFAULT_PROMPTS)
    lines = [line for line in Path(path).read_text().splitlines() if line.strip()]
    return [json.loads(line)["prompt"] for line in lines] if path.endswith(".jsonl") else lines


def cell_requests(client, cell: dict, grid: SweepGrid, prompts: list[str], response_format) -> list[tuple[int, int, dict]]:
    requests = []
    for index, prompt in enumerate(prompts):
        for seed in grid.seeds:
            body = {"model": client.model, "messages": [{"role": "user", "content": prompt}], "seed": seed,
                    "max_completion_tokens": grid.max_tokens, "logprobs": True, **cell}
            if response_format is not None:
                body["response_format"] = response_format
            requests.append((index, seed, body))
    return requests


def to_answer(index: int, seed: int, body: dict) -> tuple[Answer, list]:
    choice = body["choices"][0]
    content = (choice.get("logprobs") or {}).get("content") or []
    answer = Answer(index, seed, choice["message"]["content"] or "", body["usage"]["completion_tokens"],
                    choice["finish_reason"], tuple(t["logprob"] for t in content))
    return answer, [t["bytes"] for t in content]


def run_cells(client, grid, prompts, schema, response_format) -> tuple[list[dict], list[dict], dict]:
    rows, seed_rows, tokens = [], [], {}
    for number, cell in enumerate(grid.cells(), start=1):
        requests = cell_requests(client, cell, grid, prompts, response_format)
        bodies, seconds = client.run([body for _, _, body in requests])
        answers = []
        for (index, seed, _), body in zip(requests, bodies):
            answer, answer_tokens = to_answer(index, seed, body)
            answers.append(answer)
            tokens[(number, index, seed)] = answer_tokens
        rows.append({"cell": number, **cell, **cell_metrics(answers, seconds, schema), "seconds": seconds})
        for seed in grid.seeds:
            seeded = [a for a in answers if a.seed == seed]
            seed_rows.append({"cell": number, **cell, "seed": seed, **answer_metrics(seeded, schema)})
        print(f"cell {number}/{len(grid.cells())} {cell}: {seconds:.1f} s", file=sys.stderr)
    return rows, seed_rows, tokens


def check_reproducible(client, grid, prompts, response_format, tokens, num_cells: int) -> list[str]:
    """Reruns `num_cells` random cells shuffled together; one line per cell whose tokens changed."""
    cells = grid.cells()
    sample = sorted(random.Random(0).sample(range(1, len(cells) + 1), min(num_cells, len(cells))))
    requests = [(number, index, seed, body) for number in sample
                for index, seed, body in cell_requests(client, cells[number - 1], grid, prompts, response_format)]
    random.Random(1).shuffle(requests)
    bodies, _ = client.run([body for *_, body in requests])
    changed: dict[int, int] = {}
    for (number, index, seed, _), body in zip(requests, bodies):
        if to_answer(index, seed, body)[1] != tokens[(number, index, seed)]:
            changed[number] = changed.get(number, 0) + 1
    per_cell = len(prompts) * len(grid.seeds)
    print(f"reproducibility: reran cells {sample} ({len(requests)} requests) shuffled together", file=sys.stderr)
    return [f"cell {n} {cells[n - 1]}: {k} of {per_cell} answers changed tokens" for n, k in sorted(changed.items())]


def write_csv(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()} for row in rows)


def print_table(rows: list[dict], columns: list[str]) -> None:
    print("| " + " | ".join(columns) + " |\n|" + "---|" * len(columns))
    for row in rows:
        cells = [row.get(c, "") for c in columns]
        print("| " + " | ".join(f"{v:.3g}" if isinstance(v, float) and not math.isnan(v) else str(v) for v in cells) + " |")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from hearth.server.engine_options import add_engine_options

    p = argparse.ArgumentParser(prog="hearth sweep", description=__doc__.splitlines()[0], epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--grid", help="YAML file: axis names (as below, with underscores) -> lists, seeds, max_tokens, "
                   "prompts, json_schema, constrain")
    for axis in AXES:
        p.add_argument(f"--{axis.replace('_', '-')}", dest=axis, type=int if axis == "top_k" else float, nargs="+")
    p.add_argument("--seeds", type=int, nargs="+", help="seeds of each cell (default: 1 2)")
    p.add_argument("--max-tokens", dest="max_tokens", type=int, help="max_completion_tokens of every request (default: 32)")
    p.add_argument("--prompts", help="prompt file: .txt (one a line) or .jsonl ({\"prompt\"}); default: 20 built in")
    p.add_argument("--json-schema", dest="json_schema", help="JSON schema file: report the rate of answers valid against it")
    p.add_argument("--constrain", action="store_true", default=None, help="also send the schema as response_format")
    p.add_argument("--check-reproducible", action="store_true", help="rerun a sample of cells batched differently")
    p.add_argument("--check-cells", type=int, default=3, help="cells the reproducibility check reruns (default: 3)")
    p.add_argument("--url", help="a running OpenAI-compatible server instead of an in-process engine")
    p.add_argument("--concurrency", type=int, default=32, help="requests in flight with --url (default: 32)")
    p.add_argument("--out", required=True, help="folder for sweep.csv, seeds.csv and the PNGs")
    add_engine_options(p)
    args = p.parse_args(argv)
    grid_file = yaml.safe_load(Path(args.grid).read_text()) if args.grid else {}
    unknown = set(grid_file) - {*AXES, "seeds", "max_tokens", "prompts", "json_schema", "constrain"}
    if unknown:
        p.error(f"{args.grid}: unknown keys {sorted(unknown)}")
    for key, value in grid_file.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from hearth.server.sweep.clients import HTTPClient, InProcessClient, SweepRequestError
    from hearth.server.sweep.plots import heatmaps, seed_lines

    axes = tuple((a, tuple(v if isinstance(v, list) else [v])) for a in AXES if (v := getattr(args, a)) is not None)
    grid = SweepGrid(axes or (("temperature", (1.0,)),), tuple(args.seeds or (1, 2)), args.max_tokens or 32)
    prompts = load_prompts(args.prompts)
    schema = json.loads(Path(args.json_schema).read_text()) if args.json_schema else None
    response_format = ({"type": "json_schema", "json_schema": {"name": "sweep", "schema": schema}}
                       if schema is not None and args.constrain else None)
    if args.url:
        client = HTTPClient(args.url, args.model, args.concurrency)
    else:
        from hearth.engine.llm_engine import LLMEngine
        from hearth.server.engine_options import engine_config, resolve_entry

        entry = resolve_entry(args)
        client = InProcessClient(LLMEngine(engine_config(args, entry), entry), entry)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cells = grid.cells()
    print(f"{len(cells)} cells x {len(prompts)} prompts x {len(grid.seeds)} seeds, max_tokens {grid.max_tokens}, "
          f"on {client.description}", file=sys.stderr)
    try:
        rows, seed_rows, tokens = run_cells(client, grid, prompts, schema, response_format)
        changed = (check_reproducible(client, grid, prompts, response_format, tokens, args.check_cells)
                   if args.check_reproducible else [])
    except SweepRequestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    metrics = [m for m in METRICS if m != "json_valid_rate" or schema is not None]
    write_csv(out / "sweep.csv", rows)
    write_csv(out / "seeds.csv", seed_rows)
    main_axes = grid.main_axes()
    others = [name for name, values in grid.axes if name not in main_axes and len(values) > 1]
    heatmaps(rows, metrics, main_axes[0], main_axes[1] if len(main_axes) > 1 else None, others + ["seeds"],
             out / "heatmaps.png")
    seed_lines(seed_rows, [m for m in SEED_METRICS if m in metrics], main_axes[0], out / "seeds.png")
    print_table(rows, ["cell", *(name for name, _ in grid.axes), *metrics])
    print(f"\nwrote {out / 'sweep.csv'}, {out / 'seeds.csv'}, {out / 'heatmaps.png'}, {out / 'seeds.png'}")
    if args.check_reproducible:
        print("\n".join(changed) if changed else "reproducible: no cell's tokens changed")
    return 1 if changed else 0


if __name__ == "__main__":
    raise SystemExit(main())
