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

    python benchmarks/bench_quality.py --gguf FILE [FILE ...] [--tokens 2048] [--llama-perplexity]

- GGUF files as downloaded: per file, hearth serving it in its own format (no quantization: the file's types
  decide, dtype auto) against the same file with quantization none, dtype float32 (its float32
  dequantization, the file's own numbers): perplexity over all --tokens, mean and max |dlogit| over the
  first window, and KL(reference || file) and top-1 agreement over the tokens llama-perplexity scores
  (the second half of each --window chunk), so the KL pair compares like with like.
- --llama-perplexity: the same for llama.cpp on the same file and text (the token slice decoded to a text
  file): `llama-quantize --allow-requantize FILE F32` makes the file's float32 reference, `llama-perplexity
  -c WINDOW --kl-divergence-base` on it, then `--kl-divergence` on the file; it prints its perplexity (over
  the second half of each chunk), mean KL and "Same top p"; it gives no |dlogit|.
"""

from __future__ import annotations

import argparse
import math
import re
import subprocess
import tempfile
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


LLAMA_BIN = Path.home() / ".cache/hearth/peers/llama_cpp_python-0.3.36/vendor/llama.cpp/build-avx2/bin"


def scored_halves(engine: LLMEngine, ids: list[int], window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """log-probabilities [n, vocab] of the second half of each full --window chunk (llama-perplexity's rows:
    positions window/2 .. window-2 predict the next token), and the targets."""
    rows, targets = [], []
    for start in range(0, len(ids) - window + 1, window):
        chunk = ids[start:start + window]
        logits = window_logits(engine, chunk)
        rows.append(torch.log_softmax(logits[window // 2:window - 1], dim=-1))
        targets.append(torch.tensor(chunk[window // 2 + 1:]))
    return torch.cat(rows), torch.cat(targets)


def llama_perplexity(path: Path, text: str, window: int, work: Path) -> dict:
    """llama.cpp's perplexity, mean KL and top-token agreement on `path` against its own F32 requant."""
    text_file, f32, base = work / "text.txt", work / f"{path.stem}-F32.gguf", work / f"{path.stem}.kld"
    text_file.write_text(text)
    subprocess.run([str(LLAMA_BIN / "llama-quantize"), "--allow-requantize", str(path), str(f32), "F32"],
                   check=True, capture_output=True)
    common = ["-f", str(text_file), "-c", str(window), "-b", str(window), "-t", "2", "--kl-divergence-base", str(base)]
    subprocess.run([str(LLAMA_BIN / "llama-perplexity"), "-m", str(f32), *common], check=True, capture_output=True)
    f32.unlink()
    out = subprocess.run([str(LLAMA_BIN / "llama-perplexity"), "-m", str(path), *common, "--kl-divergence"],
                         check=True, capture_output=True, text=True)
    log = out.stdout + out.stderr
    (work / f"{path.stem}-llama-perplexity.log").write_text(log)
    number = lambda pattern: float(re.search(pattern, log).group(1))  # noqa: E731
    return {"ppl": number(r"Mean PPL\(Q\)\s*:\s*([0-9.]+)"), "kl": number(r"Mean\s+KLD:\s*([0-9.]+)"),
            "top": number(r"Same top p:\s*([0-9.]+)") / 100, "chunks": len(re.findall(r"\[\d+\]", log))}


def bench_gguf(args) -> None:
    registry = ModelRegistry.load(ROOT / "models.yaml")
    print(f"pydoc_data.topics first {args.tokens} tokens, windows of {args.window}; reference: the same file, "
          f"quantization none, dtype float32")
    print(f"{'file':<34}{'format':>7}{'ppl':>9}{'ppl f32':>9}{'mean |dl|':>10}{'max |dl|':>9}{'KL':>9}{'top1':>7}"
          f"{'llama ppl':>10}{'llama f32':>10}{'llama KL':>9}{'top1':>7}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="gguf-quality-"))
    for path in args.gguf:
        path = path.resolve()
        entry = registry.resolve(str(path))
        fmt = entry.serving_format() or "none"
        runs = {}
        for label, dtype, quantization in (("ref", "float32", "none"), ("file", "auto", fmt)):
            engine = LLMEngine(EngineConfig(model_path=str(entry.path), dtype=dtype, quantization=quantization,
                                            max_num_seqs=4, max_model_len=1024, kv_cache_memory_gib=0.5), entry)
            ids = text_tokens(engine.tokenizer, args.tokens)
            runs[label] = {"first": window_logits(engine, ids[:args.window]), "ppl": perplexity(engine, ids, args.window),
                           "halves": scored_halves(engine, ids, args.window)}
            text = engine.tokenizer.decode(ids)
            del engine
        ref, got = runs["ref"], runs["file"]
        distance = (got["first"] - ref["first"]).abs()
        (p, _), (q, _) = ref["halves"], got["halves"]
        kl = float((p.exp() * (p - q)).sum(-1).mean())
        top = float((p.argmax(-1) == q.argmax(-1)).float().mean())
        row = (f"{path.name:<34}{fmt:>7}{got['ppl']:>9.3f}{ref['ppl']:>9.3f}{float(distance.mean()):>10.4f}"
               f"{float(distance.max()):>9.3f}{kl:>9.5f}{top:>7.1%}")
        if args.llama_perplexity:
            llama = llama_perplexity(path, text, args.window, work)
            llama_ref = re.search(r"Mean PPL\(base\)\s*:\s*([0-9.]+)",
                                  (work / f"{path.stem}-llama-perplexity.log").read_text())
            row += (f"{llama['ppl']:>10.3f}{float(llama_ref.group(1)) if llama_ref else float('nan'):>10.3f}"
                    f"{llama['kl']:>9.5f}{llama['top']:>7.1%}")
        print(row, flush=True)
    print(f"(ppl: hearth over all {args.tokens} tokens in windows of {args.window}; llama ppl: llama-perplexity over "
          f"the second half of each {args.window}-token chunk; KL = mean KL(f32 reference || file) per scored token, "
          f"top1 = share of tokens whose argmax equals the reference's, both over llama-perplexity's rows; "
          f"|dl| = |logit - reference| over the first window; llama logs in {work})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--window", type=int, default=512)
    parser.add_argument("--gguf", type=Path, nargs="+", help="per file: its own format against its float32 forward")
    parser.add_argument("--llama-perplexity", action="store_true",
                        help="with --gguf: also llama.cpp's llama-perplexity on the same file and text")
    args = parser.parse_args()
    if args.gguf:
        bench_gguf(args)
        return
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
