"""Weight-only kernels on this machine: the default model's 30 layers of linears, per decode step.

    python benchmarks/bench_linear.py [--rows 1 2 8 32] [--iters 20]

For each kernel and activation dtype, prints the median ms to run every linear of 30 layers once (weights
streamed from memory, as in a real decode step: 30 distinct layers, not one cache-warm matrix) at each row
count, and whether each kernel computes every row the same way whatever the row count (rows 1..64 against
64 rows: the property batch invariance rests on).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from engine.model.linear import dense_linear, int4_linear, int8_linear

# SmolLM2-135M: qkv, o, gate_up, down (out, in).
SHAPES = [(960, 576), (576, 576), (3072, 576), (576, 1536)]
NUM_LAYERS = 30


def build(kind: str, dtype: torch.dtype):
    torch.manual_seed(0)
    layers = []
    for _ in range(NUM_LAYERS):
        weights = [torch.randn(out, inp) * 0.05 for out, inp in SHAPES]
        if kind == "dense":
            layers.append([dense_linear(w.to(dtype), None, torch.device("cpu")) for w in weights])
        elif kind == "int8":
            layers.append([int8_linear(w, None, dtype) for w in weights])
        else:
            layers.append([int4_linear(w, None, dtype, group_size=32) for w in weights])
    return layers


def step_ms(layers, rows: int, dtype: torch.dtype, iters: int) -> float:
    inputs = {inp: torch.randn(rows, inp).to(dtype) for _, inp in SHAPES}
    times = []
    for i in range(iters + 3):
        started = time.perf_counter()
        for layer in layers:
            for linear, (_, inp) in zip(layer, SHAPES):
                linear.matmul(inputs[inp])
        if i >= 3:
            times.append((time.perf_counter() - started) * 1e3)
    return statistics.median(times)


def rows_differing(linear, in_features: int, dtype: torch.dtype) -> list[int]:
    x = torch.randn(64, in_features).to(dtype)
    reference = linear.matmul(x)
    return [m for m in range(1, 64) if not torch.equal(linear.matmul(x[:m]), reference[:m])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 2, 8, 32])
    parser.add_argument("--iters", type=int, default=20)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'kernel':<22}" + "".join(f"{f'{r} rows':>10}" for r in args.rows) + "   rows differing from 64-row call (M)")
    for kind, dtype in [("dense", torch.bfloat16), ("dense", torch.float32), ("int8", torch.bfloat16),
                        ("int8", torch.float32), ("int4", torch.bfloat16), ("int4", torch.float32)]:
        layers = build(kind, dtype)
        cells = "".join(f"{step_ms(layers, r, dtype, args.iters):>10.2f}" for r in args.rows)
        differing = sorted({m for linear, (_, inp) in zip(layers[0], SHAPES) for m in rows_differing(linear, inp, dtype)})
        label = f"{kind} {str(dtype).removeprefix('torch.')}"
        print(f"{label:<22}{cells}   {differing if differing else 'none'}")


if __name__ == "__main__":
    main()
