"""transformers' own generate on a model folder (a shape twin), static KV cache, compiled: output tok/s by batch.

The peer for bench_serving.py's hearth figures on the same twin: one batch of B prompts at once (bench_serving's
prompts, chat template, left padding), greedy, max_new_tokens = min_new_tokens = --max-tokens (EOS ignored, as
hearth's --ignore-eos). cache_implementation="static" makes generate compile the decode step (torch.compile,
CUDA graphs); --no-compile turns that off. Per batch: one untimed call (compiles), then timed calls of 1 and of
--max-tokens new tokens; TPOT = (t_N - t_1) / (N - 1), out tok/s = B * N / t_N.

Usage: python benchmarks/gpu/bench_hf_generate.py --model DIR [--batches 1 8 32 128] [--max-tokens 64]
       [--no-compile]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from streaming_load import PROMPTS  # noqa: E402


def timed_generate(model, inputs, config) -> float:
    sync = torch.cuda.synchronize if model.device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    model.generate(**inputs, generation_config=config)
    sync()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32, 128])
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--device", default="cuda", help="cuda (cpu only to check the script on a tiny twin)")
    args = parser.parse_args(argv)

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    start = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.bfloat16).to(args.device).eval()
    where = torch.cuda.get_device_name() if model.device.type == "cuda" else "cpu"
    print(f"transformers generate on {args.model} ({where}), loaded in "
          f"{time.perf_counter() - start:.1f} s; static cache, compile {'off' if args.no_compile else 'on'}, "
          f"{args.max_tokens} new tokens, greedy, EOS ignored", flush=True)
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
             for p in PROMPTS]

    def config(new_tokens: int) -> GenerationConfig:
        return GenerationConfig(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                                cache_implementation="static", disable_compile=args.no_compile,
                                pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)

    print(f"{'batch':>5} {'warm-up s':>9} {'t_1 s':>7} {'t_N s':>7} {'out tok/s':>9} {'TPOT ms':>8}", flush=True)
    for batch in args.batches:
        inputs = tokenizer([texts[i % len(texts)] for i in range(batch)], return_tensors="pt", padding=True).to(model.device)
        with torch.inference_mode():
            warm = timed_generate(model, inputs, config(args.max_tokens))
            t_1 = timed_generate(model, inputs, config(1))
            t_n = timed_generate(model, inputs, config(args.max_tokens))
        tpot = (t_n - t_1) / max(args.max_tokens - 1, 1) * 1e3
        print(f"{batch:>5} {warm:>9.1f} {t_1:>7.3f} {t_n:>7.3f} {batch * args.max_tokens / t_n:>9.1f} {tpot:>8.2f}",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
