"""Sampler microbenchmark: microseconds per call for batch x vocabulary, against one softmax (the floor).

Columns (median of --iters timed calls after --warmup calls, each call on the same logits):
  full_k   every stage active: logit_bias on 4 tokens, repetition (1.1) over ~200 prompt + 64 output
           tokens, frequency (0.3) and presence (0.2) over the 64 output tokens, temperature 0.8,
           top_k 50, top_p 0.9, min_p 0.05, a seeded stream per row, 20 raw top logprobs.
  full_p   the same with top_p 0.9 as the only cut (no top_k, no min_p): top_k makes top_p trivially cheap
           (it then only looks at 50 tokens), so this is the case where the nucleus must be found.
  greedy   temperature 0 for every row, no other stage.
  softmax  one torch.softmax over the same logits: no sampler can do less than read the row once.
  k/sm, p/sm  full_k / softmax and full_p / softmax.

Logits. By default, LM-shaped: in each row the token of rank r gets -1.1 * 1.4 * log(r) plus N(0, 0.5)
noise, with ranks randomly permuted per row: a Zipf law p ~ r^-1.54. At 128256 tokens and temperature 1
the top token has ~0.34 and the 0.9 nucleus ~40 tokens (17-89); at the benchmark's temperature 0.8, ~0.48
and ~7 tokens (2-16): about what chat models show on ordinary text. --flat uses randn * 3 instead: no
token stands out and at temperature 0.8 the 0.9 nucleus is ~1100 tokens (~5500 at temperature 1), the
worst case for finding the top_p cut without sorting.

Usage: python benchmarks/bench_sampler.py [--batches 1 8 32 128] [--vocabs 32000 49152 128256]
       [--iters 20] [--device cpu|cuda] [--backend auto|torch|triton] [--flat] [--threads N] [--stat median|min]
"""

from __future__ import annotations

import argparse
import functools
import platform
import statistics
import time
from collections.abc import Callable

import torch

from hearth.engine.runtime import configure_host_allocator
from hearth.kernels import Sampler, SamplingMetadata
from hearth.kernels.logits.sampling import stream_key

NUM_TOP_LOGPROBS = 20
NUM_PROMPT_TOKENS = 200
NUM_OUTPUT_TOKENS = 64
NUM_BIASED_TOKENS = 4


def lm_logits(num_seqs: int, vocab_size: int, generator: torch.Generator) -> torch.Tensor:
    """[num_seqs, vocab] Zipf-shaped logits, ranks permuted per row (see the module docstring)."""
    ranks = torch.arange(1, vocab_size + 1, dtype=torch.float32)
    profile = -1.1 * 1.4 * ranks.log()
    rows = [profile[torch.randperm(vocab_size, generator=generator)] for _ in range(num_seqs)]
    return torch.stack(rows) + 0.5 * torch.randn(num_seqs, vocab_size, generator=generator)


def flat_logits(num_seqs: int, vocab_size: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randn(num_seqs, vocab_size, generator=generator) * 3.0


def full_metadata(num_seqs: int, vocab_size: int, has_top_k: bool, generator: torch.Generator) -> SamplingMetadata:
    """Every stage active for every row; with has_top_k False, top_p 0.9 is the only truncation."""
    output_ids = torch.randint(0, vocab_size, (num_seqs, NUM_OUTPUT_TOKENS), generator=generator)
    prompt_ids = torch.randint(0, vocab_size, (num_seqs, NUM_PROMPT_TOKENS), generator=generator)
    # Counts of each listed id within its row (duplicates list the same id with the same count).
    counts = (output_ids.unsqueeze(2) == output_ids.unsqueeze(1)).sum(2).to(torch.int32)

    def full(value: float, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return torch.full((num_seqs,), value, dtype=dtype)

    return SamplingMetadata(
        temperature=full(0.8),
        is_greedy=torch.zeros(num_seqs, dtype=torch.bool),
        has_greedy=False,
        is_all_greedy=False,
        has_temperature_scaling=True,
        stream_keys=torch.tensor([stream_key(1000 + i, 0) for i in range(num_seqs)], dtype=torch.int64),
        positions=torch.full((num_seqs,), NUM_OUTPUT_TOKENS, dtype=torch.int64),
        bias_token_ids=torch.randint(0, vocab_size, (num_seqs, NUM_BIASED_TOKENS), generator=generator),
        bias_values=torch.tensor([5.0, -5.0, 2.0, -100.0]).repeat(num_seqs, 1),
        frequency_penalty=full(0.3),
        presence_penalty=full(0.2),
        output_token_ids=output_ids,
        output_token_counts=counts,
        repetition_penalty=full(1.1),
        seen_token_ids=torch.cat([prompt_ids, output_ids], dim=1),
        top_k=full(50 if has_top_k else vocab_size, torch.int64),
        top_p=full(0.9),
        min_p=full(0.05 if has_top_k else 0.0),
        is_all_truncated=True,
        # top_p without top_k measures the nucleus against the row's whole mass.
        needs_total_mass=not has_top_k,
        num_top_logprobs=NUM_TOP_LOGPROBS,
        has_logprobs=True,
        is_logprobs_processed=False,
    )


def greedy_metadata(num_seqs: int) -> SamplingMetadata:
    return SamplingMetadata(
        temperature=torch.ones(num_seqs),
        is_greedy=torch.ones(num_seqs, dtype=torch.bool),
        has_greedy=True,
        is_all_greedy=True,
        has_temperature_scaling=False,
        stream_keys=torch.zeros(num_seqs, dtype=torch.int64),
        positions=torch.zeros(num_seqs, dtype=torch.int64),
    )


def to_device(md: SamplingMetadata, device: torch.device) -> SamplingMetadata:
    return SamplingMetadata(**{k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in md.__dict__.items()})


def time_interleaved_us(fns: list[Callable[[], object]], iters: int, warmup: int, device: torch.device,
                        stat: str = "median") -> list[float]:
    """Median (or minimum) wall time of one call of each fn, in microseconds.

    The calls are interleaved (one of each per round, in rotating order), so every kind of call starts
    from the cache the others leave behind, as a sampler call does in a serving loop between forwards,
    rather than the hot cache of calling one function back to back. On CUDA each call is synchronised.
    """
    is_cuda = device.type == "cuda"
    for _ in range(warmup):
        for fn in fns:
            fn()
    if is_cuda:
        torch.cuda.synchronize()
    times: list[list[float]] = [[] for _ in fns]
    for round_index in range(iters):
        for offset in range(len(fns)):
            index = (round_index + offset) % len(fns)
            start = time.perf_counter()
            fns[index]()
            if is_cuda:
                torch.cuda.synchronize()
            times[index].append(time.perf_counter() - start)
    return [(min(t) if stat == "min" else statistics.median(t)) * 1e6 for t in times]


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, nargs="+", default=None)
    parser.add_argument("--vocabs", type=int, nargs="+", default=[32000, 49152, 128256])
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--backend", choices=["auto", "torch", "triton"], default="auto",
                        help="Sampler backend (auto: Triton for CUDA logits, torch on the CPU)")
    parser.add_argument("--flat", action="store_true", help="randn * 3 logits instead of LM-shaped ones")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    parser.add_argument("--stat", choices=["median", "min"], default="median",
                        help="min is steadier on a machine shared with other jobs")
    args = parser.parse_args()

    is_allocator_set = configure_host_allocator()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    batches = args.batches or ([1, 8, 32, 128] + ([256] if device.type == "cuda" else []))
    make_logits = flat_logits if args.flat else lm_logits

    print(f"cpu: {cpu_model()} ({torch.get_num_threads()} torch threads)")
    if device.type == "cuda":
        print(f"gpu: {torch.cuda.get_device_name(device)}")
    print(f"torch {torch.__version__}, python {platform.python_version()}, "
          f"glibc allocator tuned: {is_allocator_set}, logits: {'flat randn*3' if args.flat else 'LM-shaped (Zipf)'}")
    print(f"{args.stat} of {args.iters} interleaved calls of each kind after {args.warmup} warm-up rounds, microseconds per call")
    header = f"{'batch':>5} {'vocab':>7} {'full_k':>10} {'full_p':>10} {'greedy':>10} {'softmax':>10} {'k/sm':>6} {'p/sm':>6}"
    print(header)
    print("-" * len(header))

    sampler = Sampler(backend=args.backend)
    print(f"sampler backend: {args.backend}")
    for vocab_size in args.vocabs:
        for num_seqs in batches:
            generator = torch.Generator().manual_seed(num_seqs * 1_000_003 + vocab_size)
            logits = make_logits(num_seqs, vocab_size, generator).to(device)
            md_k = to_device(full_metadata(num_seqs, vocab_size, True, generator), device)
            md_p = to_device(full_metadata(num_seqs, vocab_size, False, generator), device)
            md_greedy = to_device(greedy_metadata(num_seqs), device)
            calls = [functools.partial(fn, logits, *extra)
                     for fn, extra in ((sampler, (md_k,)), (sampler, (md_p,)), (sampler, (md_greedy,)), (torch.softmax, (1,)))]
            timings = time_interleaved_us(calls, args.iters, args.warmup, device, args.stat)
            full_k, full_p, greedy, softmax = timings
            print(f"{num_seqs:>5} {vocab_size:>7} {full_k:>10.0f} {full_p:>10.0f} {greedy:>10.0f} {softmax:>10.0f} "
                  f"{full_k / softmax:>6.2f} {full_p / softmax:>6.2f}", flush=True)


if __name__ == "__main__":
    main()
