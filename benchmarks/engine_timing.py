"""Shared by the engine benchmarks: the median decode-step time of a batch of greedy sequences."""

from __future__ import annotations

import statistics
import time

from hearth.engine.chat import render_chat
from hearth.engine.llm_engine import LLMEngine
from hearth.engine.sampling.sampling_params import SamplingParams


def median_decode_step(engine: LLMEngine, num_seqs: int, num_steps: int, tag: str = "r") -> float:
    """Seconds per engine step while num_seqs greedy sequences decode (prefill steps excluded)."""
    prompt = render_chat(engine.tokenizer, [{"role": "user", "content": "Tell me a long story."}])
    for i in range(num_seqs):
        engine.add_request(f"{tag}-{i}", prompt,
                           SamplingParams(temperature=0, max_tokens=num_steps + 4, ignore_eos=True))
    for _ in range(3):
        engine.step()
    times = []
    while engine.has_unfinished_requests():
        start = time.perf_counter()
        engine.step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
