"""Quality of each weight mode on the default model: perplexity, greedy agreement with bf16, logit distance.

    python benchmarks/bench_quality.py [--modes bf16 int8 int4 int4-fp32] [--tokens 4096]

- Perplexity over a fixed slice of the standard library's `pydoc_data.topics` (English prose on every
  Python, so no data set is needed): the first --tokens tokens of its topics in sorted order, scored in
  windows of --window tokens.
- Greedy agreement: 64 greedy tokens for each fixed prompt, the share equal to bf16's (position by
  position, up to the first divergence counted as the rest).
- Distance to the source: the default model ships as a Q4_1 GGUF; its float32 dequantization (the
  converted folder) is the reference. Mean and max |logit - reference| over the perplexity text's first
  window: the native 4-bit load must be at least as close to it as the bf16 conversion.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from hearth.engine.chat import render_chat
from hearth.engine.config import EngineConfig
from hearth.engine.llm_engine import LLMEngine
from hearth.engine.loading.registry import ModelRegistry
from hearth.engine.model.attention import AttentionMetadata, PrefillSegment, RowContexts
from hearth.engine.sampling.sampling_params import SamplingParams

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = [
    "What is the capital of France?",
    "Write a short poem about the sea.",
    "Explain what a hash table is in two sentences.",
    "List three uses of copper.",
    "How do I reverse a list in Python?",
    "Why is the sky blue?",
]
# label -> (dtype, quantization)
MODES = {
    "fp32-dequant": ("float32", "none"),
    "bf16": ("bfloat16", "none"),
    "bf16-kernels": ("bfloat16", "bf16"),
    "int8": ("bfloat16", "int8"),
    "int4": ("bfloat16", "int4"),
    "int4-fp32": ("float32", "int4"),
}


def text_tokens(tokenizer, num_tokens: int) -> list[int]:
    from pydoc_data.topics import topics

    text = "\n\n".join(topics[name] for name in sorted(topics))
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) < num_tokens:
        raise ValueError(f"pydoc_data.topics has only {len(ids)} tokens here, fewer than --tokens {num_tokens}")
    return ids[:num_tokens]


def window_logits(engine: LLMEngine, token_ids: list[int]) -> torch.Tensor:
    """float32 logits [n, vocab] of one window, computed as one prefill chunk from an empty cache, attended as
    the engine attends it (the row kernel where the runner uses it: int8/int4 on this CPU; else SDPA)."""
    n = len(token_ids)
    if engine.runner.attends_rows_alone:
        size = engine.config.block_size
        rows = RowContexts(torch.arange(-(-n // size), dtype=torch.int32), torch.zeros(n, dtype=torch.int64),
                           torch.arange(n), size)
        md = AttentionMetadata(slot_mapping=torch.arange(n), row_contexts=rows)
    else:
        md = AttentionMetadata(slot_mapping=torch.arange(n), prefills=[PrefillSegment(0, n, 0)])
    model = engine.loaded.model
    with torch.inference_mode():
        hidden = model.forward(torch.tensor(token_ids), torch.arange(n), md, engine.kv_cache)
        return model.lm_head.matmul(hidden).float()


def perplexity(engine: LLMEngine, ids: list[int], window: int) -> float:
    total, count = 0.0, 0
    for start in range(0, len(ids) - 1, window):
        chunk = ids[start:start + window + 1]
        logits = window_logits(engine, chunk[:-1])
        nll = torch.nn.functional.cross_entropy(logits, torch.tensor(chunk[1:]), reduction="sum")
        total, count = total + float(nll), count + len(chunk) - 1
    return math.exp(total / count)


def greedy(engine: LLMEngine) -> list[list[int]]:
    outputs = []
    for index, prompt in enumerate(PROMPTS):
        engine.add_request(f"g{index}", render_chat(engine.tokenizer, [{"role": "user", "content": prompt}]),
                           SamplingParams(temperature=0, max_tokens=64, ignore_eos=True))
        tokens: list[int] = []
        while engine.has_unfinished_requests():
            for out in engine.step():
                for delta in out.choices:
                    tokens.extend(delta.token_ids)
        outputs.append(tokens)
    return outputs


def agreement(a: list[list[int]], b: list[list[int]]) -> float:
    """Share of a's tokens that lie in the common prefix of each prompt's two answers."""
    same = 0
    for x, y in zip(a, b):
        for u, v in zip(x, y):
            if u != v:
                break
            same += 1
    return same / sum(len(x) for x in a)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--window", type=int, default=512)
    args = parser.parse_args()
    entry = ModelRegistry.load(ROOT / "models.yaml").resolve(None)
    results: dict[str, dict] = {}
    reference_logits = None
    print(f"default model, pydoc_data.topics first {args.tokens} tokens, windows of {args.window}; "
          f"greedy agreement over {len(PROMPTS)} prompts x 64 tokens")
    print(f"{'mode':<14}{'perplexity':>11}{'vs bf16':>9}{'greedy = bf16':>15}{'mean |dlogit|':>15}"
          f"{'max |dlogit|':>14}{'weights MiB':>13}", flush=True)
    for label in ["fp32-dequant", "bf16", *[m for m in args.modes if m not in ("fp32-dequant", "bf16")]]:
        dtype, quantization = MODES[label]
        engine = LLMEngine(EngineConfig(model_path=str(entry.path), dtype=dtype, quantization=quantization,
                                        max_num_seqs=4, max_model_len=1024, kv_cache_memory_gib=0.5), entry)
        ids = text_tokens(engine.tokenizer, args.tokens)
        logits = window_logits(engine, ids[:args.window])
        if reference_logits is None:
            reference_logits = logits
        distance = (logits - reference_logits).abs()
        results[label] = {"ppl": perplexity(engine, ids, args.window), "tokens": greedy(engine),
                          "mean": float(distance.mean()), "max": float(distance.max()),
                          "bytes": engine.loaded.model.num_weight_bytes}
        del engine
        for done in [n for n in results if "bf16" in results and not results[n].get("printed")]:
            r, base = results[done], results["bf16"]
            print(f"{done:<14}{r['ppl']:>11.3f}{r['ppl'] / base['ppl'] - 1:>+9.2%}"
                  f"{agreement(r['tokens'], base['tokens']):>15.1%}{r['mean']:>15.4f}{r['max']:>14.3f}"
                  f"{r['bytes'] / 2**20:>13.1f}", flush=True)
            r["printed"] = True
    print("(mean/max |dlogit|: against the float32 dequantized GGUF, the model's own numbers)")


if __name__ == "__main__":
    main()
