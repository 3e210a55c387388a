"""Where a decode step's time goes, by part: ms per engine step of N greedy sequences, per weight mode.

    python benchmarks/profile_step.py [--modes bf16 int4] [--batch 1] [--steps 40] [--top-ops 15]

Sequence i's prompt ends with i extra words, so decode rows have distinct context lengths, as in serving.
Parts are timed around the engine's own calls (scheduler, input building, forward, logits, sampler, output
processing); the forward is split further with torch.profiler by the ops that ran (linear kernels,
attention, norms and elementwise ops), scaled to the forward's wall time. The op count per step is
torch.profiler's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections import defaultdict
from pathlib import Path

import torch

from hearth.engine.chat import render_chat
from hearth.engine.config import EngineConfig
from hearth.engine.llm_engine import LLMEngine
from hearth.engine.loading.registry import ModelRegistry
from hearth.engine.sampling.sampling_params import SamplingParams
from hearth.kernels import cpu_isa

ROOT = Path(__file__).resolve().parent.parent
MODES = {"bf16": ("bfloat16", "none"), "bf16-kernels": ("bfloat16", "bf16"), "int8": ("bfloat16", "int8"), "int4": ("bfloat16", "int4")}
LINEAR_OPS = ("mkldnn::_linear_pointwise", "aten::_weight_int8pack_mm", "aten::_weight_int4pack_mm_for_cpu",
              "aten::addmm", "aten::mm", "aten::linear", "vnni_linear::q4_linear", "vnni_linear::q8_linear")
ATTENTION_OPS = ("aten::bmm", "aten::_softmax", "aten::index_copy_", "aten::scaled_dot_product_attention",
                 "aten::_scaled_dot_product_flash_attention_for_cpu")


def timed(times: dict[str, list[float]], name: str, fn):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        result = fn(*args, **kwargs)
        times[name].append(time.perf_counter() - start)
        return result
    return wrapper


def profile_mode(entry, mode: str, num_seqs: int, num_steps: int, num_top_ops: int = 0) -> tuple[dict[str, float], int]:
    dtype, quantization = MODES[mode]
    engine = LLMEngine(EngineConfig(model_path=str(entry.path), dtype=dtype, quantization=quantization,
                                    max_num_seqs=max(num_seqs, 2)), entry)
    for i in range(num_seqs):
        # Each sequence's context has its own length, as clients' do in serving (decode attention groups rows
        # by context length).
        prompt = render_chat(engine.tokenizer, [{"role": "user", "content": "Tell me a long story." + " Please." * i}])
        engine.add_request(f"p{i}", prompt, SamplingParams(temperature=0, max_tokens=3 * num_steps + 20,
                                                          ignore_eos=True))
    for _ in range(5):
        engine.step()
    times: dict[str, list[float]] = defaultdict(list)
    model, runner = engine.loaded.model, engine.runner
    model.forward = timed(times, "forward", model.forward)
    model.compute_logits = timed(times, "lm_head", model.compute_logits)
    runner._prepare = timed(times, "inputs", runner._prepare)
    engine.scheduler.schedule = timed(times, "scheduler", engine.scheduler.schedule)
    engine.sampler = type("TimedSampler", (), {"__call__": staticmethod(timed(times, "sampler", engine.sampler))})()
    engine._process = timed(times, "outputs", engine._process)
    for _ in range(num_steps):
        start = time.perf_counter()
        engine.step()
        times["step"].append(time.perf_counter() - start)
    parts = {name: statistics.median(values) * 1e3 for name, values in times.items()}

    from torch.profiler import ProfilerActivity, profile, record_function

    from hearth.kernels.model import vnni_linear

    apply = vnni_linear._apply

    def recorded(name, *args):  # the VNNI kernels are ctypes calls, not torch ops: named for the profiler
        with record_function(f"vnni_linear::{name}"):
            return apply(name, *args)

    vnni_linear._apply = recorded
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(10):
            engine.step()
    vnni_linear._apply = apply
    by_kind: dict[str, float] = defaultdict(float)
    num_ops = 0
    for event in prof.key_averages():
        num_ops += event.count
        kind = ("linear" if event.key in LINEAR_OPS else "attention" if event.key in ATTENTION_OPS
                else "norm/rotary/other ops")
        by_kind[kind] += event.self_cpu_time_total
    total = sum(by_kind.values()) or 1.0
    if num_top_ops:
        print(f"{mode}: ops by self CPU time per step (torch.profiler, 10 steps)")
        print(f"{'op':<48}{'calls':>8}{'ms':>9}")
        for event in sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:num_top_ops]:
            print(f"{event.key:<48}{event.count // 10:>8}{event.self_cpu_time_total / 1e4:>9.2f}")
    forward = parts.get("forward", 0.0)
    for kind, value in by_kind.items():
        parts[f"  forward: {kind}"] = forward * value / total
    parts["python and glue"] = parts["step"] - sum(v for k, v in parts.items() if k != "step" and not k.startswith(" "))
    return parts, num_ops // 10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", nargs="+", default=["bf16", "int4"], choices=list(MODES))
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--top-ops", type=int, default=0, help="also print the N ops with the most self time")
    parser.add_argument("--isa", choices=cpu_isa.LEVELS, help=f"cap the CPU level ({cpu_isa.ENV}) of every kernel")
    args = parser.parse_args()
    if args.isa:
        os.environ[cpu_isa.ENV] = args.isa
    entry = ModelRegistry.load(ROOT / "models.yaml").resolve(None)
    results = {mode: profile_mode(entry, mode, args.batch, args.steps, args.top_ops) for mode in args.modes}
    names = list(next(iter(results.values()))[0])
    print(f"ms per decode step, {args.batch} sequence(s), torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'part':<34}" + "".join(f"{mode:>10}" for mode in results))
    for name in ["step", *[n for n in names if n != "step"]]:
        print(f"{name:<34}" + "".join(f"{results[m][0].get(name, 0.0):>10.2f}" for m in results))
    print(f"{'ops per step (torch.profiler)':<34}" + "".join(f"{results[m][1]:>10d}" for m in results))


if __name__ == "__main__":
    main()
