"""The sweep's metrics on hand-made texts, against values worked out by hand."""

from __future__ import annotations

import math

import pytest

from hearth.server.sweep.metrics import (
    Answer,
    cell_metrics,
    distinct_n,
    is_valid_json,
    mean_logprob,
    repeated_ngram_rate,
)


def test_distinct_n_pools_the_answers_ngrams():
    # words a b c a b d: 4 distinct of 6; bigrams ab bc ab bd: 3 distinct of 4
    assert distinct_n(["a b c", "a b d"], 1) == pytest.approx(4 / 6)
    assert distinct_n(["a b c", "a b d"], 2) == pytest.approx(3 / 4)
    assert distinct_n(["same words", "same words"], 2) == pytest.approx(1 / 2)
    assert math.isnan(distinct_n(["one", "two"], 2))


def test_repeated_ngram_rate_counts_repeats_within_one_answer():
    loop = "the cat the cat the cat"
    # bigrams: (the cat) x3, (cat the) x2 -> 5 bigrams, 2 distinct, 3 repeats
    assert repeated_ngram_rate(loop, 2) == pytest.approx(3 / 5)
    # trigrams: (the cat the) x2, (cat the cat) x2 -> 4 trigrams, 2 repeats
    assert repeated_ngram_rate(loop, 3) == pytest.approx(2 / 4)
    assert repeated_ngram_rate("no word comes back here", 2) == 0.0
    assert math.isnan(repeated_ngram_rate("too short", 3))


def test_mean_logprob_is_per_token():
    assert mean_logprob([-1.0, -2.0, -3.0]) == pytest.approx(-2.0)
    assert math.isnan(mean_logprob([]))


def test_json_validity_checks_the_schema_when_given():
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    assert is_valid_json('{"city": "Paris"}', schema)
    assert not is_valid_json('{"city": 3}', schema)
    assert not is_valid_json('{"town": "Paris"}', schema)
    assert not is_valid_json('{"city": "Par', schema)
    assert is_valid_json("[1, 2]")


def test_cell_metrics_average_over_prompts_and_answers():
    answers = [
        Answer(0, 1, "a b c", 3, "stop", (-1.0, -1.0, -1.0)),
        Answer(0, 2, "a b d", 5, "length", (-2.0, -4.0)),
        Answer(1, 1, "x x", 2, "stop", (-0.5, -0.5)),
        Answer(1, 2, "x x", 6, "length", (-3.0,)),
    ]
    metrics = cell_metrics(answers, seconds=2.0)
    assert metrics["distinct_1"] == pytest.approx((4 / 6 + 1 / 4) / 2)  # per prompt across seeds, then mean
    assert metrics["distinct_2"] == pytest.approx((3 / 4 + 1 / 2) / 2)
    assert metrics["mean_tokens"] == pytest.approx(4.0)
    assert metrics["max_tokens_rate"] == pytest.approx(0.5)
    assert metrics["mean_logprob"] == pytest.approx((-1.0 - 3.0 - 0.5 - 3.0) / 4)
    assert metrics["tok_s"] == pytest.approx(16 / 2.0)
    assert metrics["repeated_ngram_rate"] == 0.0  # one trigram each in a b c and a b d; x x has none (left out)
    assert "json_valid_rate" not in metrics
    with_schema = cell_metrics(answers[:1] + [Answer(0, 3, '{"a": 1}', 4, "stop")], 1.0, schema={"type": "object"})
    assert with_schema["json_valid_rate"] == pytest.approx(0.5)
