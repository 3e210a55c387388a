"""Float64 reference implementations of every sampling stage: plain loops and full sorts, written for
obviousness, not speed. Each works on one row (a 1-D float64 tensor) and the RowParams of tests/kernels/rows.
"""

from __future__ import annotations

import math
from collections import Counter

import torch

from tests.kernels.rows import RowParams

MASK64 = (1 << 64) - 1


def splitmix64_outputs(seed: int, count: int) -> list[int]:
    """The first `count` outputs of Vigna's splitmix64 generator, transcribed from the C reference."""
    state = seed & MASK64
    outputs = []
    for _ in range(count):
        state = (state + 0x9E3779B97F4A7C15) & MASK64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        outputs.append(z ^ (z >> 31))
    return outputs


def uniform(stream_key: int, position: int) -> float:
    """Output number `position` of a splitmix64 generator seeded with the stream key, as a 53-bit float."""
    return (splitmix64_outputs(stream_key, position + 1)[-1] >> 11) / 2.0**53


def processed_logits(logits: torch.Tensor, row: RowParams) -> torch.Tensor:
    """Stages 2-4: logit_bias, allowed tokens, bans, repetition then frequency/presence penalties."""
    out = logits.to(torch.float64).clone()
    for token, bias in row.logit_bias.items():
        out[token] += bias
    if row.allowed_token_ids is not None:
        allowed = set(row.allowed_token_ids)
        for token in range(out.shape[0]):
            if token not in allowed:
                out[token] = -math.inf
    for token in row.banned_token_ids:
        out[token] = -math.inf
    for token in set(row.prompt_token_ids) | set(row.output_token_ids):
        value = out[token].item()
        out[token] = value / row.repetition_penalty if value > 0 else value * row.repetition_penalty
    for token, count in Counter(row.output_token_ids).items():
        out[token] -= count * row.frequency_penalty + row.presence_penalty
    return out


def softmax(logits: torch.Tensor) -> torch.Tensor:
    return torch.softmax(logits.to(torch.float64), dim=0)


def greedy_token(logits: torch.Tensor) -> int:
    """Argmax with ties to the lowest id, by a plain scan."""
    values = logits.tolist()
    best = 0
    for token, value in enumerate(values):
        if value > values[best]:
            best = token
    return best


def kept_order(probs: torch.Tensor) -> list[int]:
    """Token ids by probability descending, ties by id (a full, stable sort)."""
    values = probs.tolist()
    return sorted(range(len(values)), key=lambda t: -values[t])


def kept_tokens(probs: torch.Tensor, top_k: int | None, top_p: float, min_p: float) -> list[int]:
    """Tokens kept by top_k, then top_p over the renormalised top_k survivors, then min_p (in that order),
    most likely first."""
    values = probs.to(torch.float64).tolist()
    order = kept_order(probs)
    if top_k is not None:
        order = order[:top_k]
    if top_p < 1.0:
        kept_mass = sum(values[t] for t in order)
        cum = 0.0
        for n, token in enumerate(order):
            cum += values[token]
            if cum / kept_mass >= top_p:
                order = order[: n + 1]
                break
    if min_p > 0.0:
        p_max = values[order[0]]
        order = [t for t in order if values[t] >= min_p * p_max]
    return order


def distribution(logits: torch.Tensor, row: RowParams) -> torch.Tensor:
    """The float64 distribution a random row draws from: stages 2-7 (processing, temperature, truncation)."""
    scaled = processed_logits(logits, row) / row.temperature
    probs = softmax(scaled)
    kept = kept_tokens(probs, row.top_k, row.top_p, row.min_p)
    result = torch.zeros_like(probs)
    result[kept] = probs[kept]
    return result / result.sum()


def log_softmax(logits: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(logits.to(torch.float64), dim=0)
