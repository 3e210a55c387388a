"""Weight-only kernels on this machine: the default model's 30 layers of linears, per decode step.

    python benchmarks/bench_linear.py [--rows 1 2 8 32] [--iters 20] [--levels avx2 avx512]

For each kernel and activation dtype, prints the median ms to run every linear of 30 layers once (weights
streamed from memory, as in a real decode step: 30 distinct layers, not one cache-warm matrix) at each row
count, and whether each kernel computes every row the same way whatever the row count (rows 1..64 against
64 rows: the property batch invariance rests on). Then the same for the vocabulary head (49152 x 576).
Kernels: bf16 oneDNN prepacked (dense), aten's int8 and int4 weight-only kernels, and hearth.kernels.model.vnni_linear's
Q4_1 layers and Q8_0 head at each CPU level of --levels (default: every level this machine builds them
for, HEARTH_CPU_ISA capping it): the same kernel text on each level's primitives, so the rows are one run's
ratios between levels. At amx, groups of 16 rows take the AMX path.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from hearth.engine.model.linear import BlockQuantizedLinear, dense_linear, int4_linear, int8_linear
from hearth.kernels import cpu_isa
from hearth.kernels.model import vnni_linear
from hearth.kernels.model.c_library import flag_sets

# SmolLM2-135M: qkv, o, gate_up, down (out, in).
SHAPES = [(960, 576), (576, 576), (3072, 576), (576, 1536)]
NUM_LAYERS = 30
HEAD_SHAPE = (49152, 576)


def vnni(kind: str, weight: torch.Tensor) -> BlockQuantizedLinear:
    if kind.startswith("q8"):  # "q8 LEVEL" or "q4 LEVEL": built and run at that CPU level
        q, d = vnni_linear.quantize_q8(weight)
        return BlockQuantizedLinear("q8", vnni_linear.pack_q8(q, d), *weight.shape, None, torch.float32)
    blocks = weight.reshape(weight.shape[0], -1, 32)
    low, high = blocks.amin(-1), blocks.amax(-1)
    scale = (high - low) / 15
    q = torch.round((blocks - low[..., None]) / scale[..., None]).clamp(0, 15).reshape(weight.shape)
    return BlockQuantizedLinear("q4", vnni_linear.pack_q4(q, scale, low), *weight.shape, None)


def make(kind: str, weight: torch.Tensor, dtype: torch.dtype):
    if kind == "dense":
        return dense_linear(weight.to(dtype), None, torch.device("cpu"))
    if kind == "int8":
        return int8_linear(weight, None, dtype)
    if kind == "int4":
        return int4_linear(weight, None, dtype, group_size=32)
    return vnni(kind, weight)


def build(kind: str, dtype: torch.dtype, shapes, num_layers: int):
    torch.manual_seed(0)
    return [[make(kind, torch.randn(out, inp) * 0.05, dtype) for out, inp in shapes] for _ in range(num_layers)]


def step_ms(layers, rows: int, dtype: torch.dtype, iters: int, shapes) -> float:
    inputs = {inp: torch.randn(rows, inp).to(dtype) for _, inp in shapes}
    times = []
    for i in range(iters + 3):
        started = time.perf_counter()
        for layer in layers:
            for linear, (_, inp) in zip(layer, shapes):
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
    parser.add_argument("--isa", choices=cpu_isa.LEVELS, help=f"cap the CPU level ({cpu_isa.ENV}) for every kernel")
    parser.add_argument("--levels", nargs="+",
                        help="CPU levels to run the C kernels at (default: each this machine builds them for, at or "
                             "below --isa)")
    args = parser.parse_args()
    if args.isa:
        os.environ[cpu_isa.ENV] = args.isa
    args.levels = args.levels or [lv for lv in cpu_isa.runnable_levels() if flag_sets(lv)]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU level {cpu_isa.level()}")
    level = os.environ.get(cpu_isa.ENV)
    layer_kinds = [("dense", torch.bfloat16, level), ("dense", torch.float32, level), ("int8", torch.bfloat16, level),
                   ("int8", torch.float32, level), ("int4", torch.bfloat16, level), ("int4", torch.float32, level)]
    head_kinds = [("dense", torch.bfloat16, level), ("int8", torch.bfloat16, level)]
    for kernel_level in args.levels:
        os.environ[cpu_isa.ENV] = kernel_level
        if vnni_linear.unavailable_reason() is not None:
            print(f"hearth.kernels.model.vnni_linear does not run at {kernel_level}: {vnni_linear.unavailable_reason()}")
            continue
        layer_kinds.append((f"q4 {kernel_level}", torch.bfloat16, kernel_level))
        head_kinds.append((f"q8 {kernel_level}", torch.bfloat16, kernel_level))
    for title, kinds, shapes, num_layers in (("30 layers' linears", layer_kinds, SHAPES, NUM_LAYERS),
                                             ("vocabulary head", head_kinds, [HEAD_SHAPE], 1)):
        print(f"\n{title}, ms per call set")
        print(f"{'kernel':<22}" + "".join(f"{f'{r} rows':>10}" for r in args.rows) + "   rows differing from 64-row call (M)")
        for kind, dtype, kernel_level in kinds:
            if kernel_level is None:
                os.environ.pop(cpu_isa.ENV, None)
            else:
                os.environ[cpu_isa.ENV] = kernel_level
            layers = build(kind, dtype, shapes, num_layers)
            cells = "".join(f"{step_ms(layers, r, dtype, args.iters, shapes):>10.2f}" for r in args.rows)
            differing = sorted({m for linear, (_, inp) in zip(layers[0], shapes) for m in rows_differing(linear, inp, dtype)})
            label = f"{kind} {str(dtype).removeprefix('torch.')}"
            print(f"{label:<22}{cells}   {differing if differing else 'none'}")


if __name__ == "__main__":
    main()
