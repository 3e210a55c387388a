"""What a sampling setting does to its answers, cell by cell of a sweep (hearth sweep).

Texts are compared as whitespace-separated words, so that models with different tokenizers (peers swept
with --url) are measured alike; lengths are completion tokens as the server counts them.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Answer:
    prompt_index: int
    seed: int
    text: str
    num_tokens: int
    finish_reason: str
    # Raw logprob of each generated token.
    logprobs: tuple[float, ...] = ()


def words(text: str) -> list[str]:
    return text.split()


def ngrams(tokens: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(texts: list[str], n: int) -> float:
    """Distinct n-grams over all n-grams of the texts pooled (Li et al., 2016); nan when there are none."""
    pooled = [gram for text in texts for gram in ngrams(words(text), n)]
    return len(set(pooled)) / len(pooled) if pooled else math.nan


def repeated_ngram_rate(text: str, n: int = 3) -> float:
    """Share of a text's n-grams that repeat an earlier one of the same text; nan when it has none."""
    grams = ngrams(words(text), n)
    return (len(grams) - len(set(grams))) / len(grams) if grams else math.nan


def mean_logprob(logprobs: tuple[float, ...] | list[float]) -> float:
    """Mean logprob per generated token; nan for an empty answer."""
    return sum(logprobs) / len(logprobs) if logprobs else math.nan


def is_valid_json(text: str, schema: dict[str, Any] | None = None) -> bool:
    """The text parses as JSON and, when a schema is given, validates against it."""
    try:
        value = json.loads(text)
    except ValueError:
        return False
    if schema is None:
        return True
    import jsonschema

    return jsonschema.Draft202012Validator(schema).is_valid(value)


def nanmean(values: list[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else math.nan


def answer_metrics(answers: list[Answer], schema: dict[str, Any] | None = None, repeat_n: int = 3) -> dict[str, float]:
    """The per-answer metrics, averaged over the answers (of a cell, or of one seed of a cell)."""
    metrics = {
        "repeated_ngram_rate": nanmean([repeated_ngram_rate(a.text, repeat_n) for a in answers]),
        "mean_tokens": nanmean([float(a.num_tokens) for a in answers]),
        "max_tokens_rate": nanmean([float(a.finish_reason == "length") for a in answers]),
        "mean_logprob": nanmean([mean_logprob(a.logprobs) for a in answers]),
    }
    if schema is not None:
        metrics["json_valid_rate"] = nanmean([float(is_valid_json(a.text, schema)) for a in answers])
    return metrics


def cell_metrics(answers: list[Answer], seconds: float, schema: dict[str, Any] | None = None,
                 repeat_n: int = 3) -> dict[str, float]:
    """distinct-1 and distinct-2 across the seeds of each prompt (averaged over prompts), the per-answer
    metrics, and output tokens per second of wall time."""
    by_prompt: dict[int, list[str]] = defaultdict(list)
    for answer in answers:
        by_prompt[answer.prompt_index].append(answer.text)
    metrics = {
        "distinct_1": nanmean([distinct_n(texts, 1) for texts in by_prompt.values()]),
        "distinct_2": nanmean([distinct_n(texts, 2) for texts in by_prompt.values()]),
        **answer_metrics(answers, schema, repeat_n),
    }
    metrics["tok_s"] = sum(a.num_tokens for a in answers) / seconds if seconds > 0 else math.nan
    return metrics
