"""A scored prompt (SamplingParams.is_scoring): each token after the first gets the logprob the model gives
it after the tokens before it, the same numbers a generation that produced those tokens reports."""

from __future__ import annotations

import pytest

from hearth.engine.sampling.sampling_params import ParamError, SamplingParams
from tests.conftest import chat_prompt

SCORING = SamplingParams(temperature=0, logprobs=True, top_logprobs=3, ignore_eos=True, is_scoring=True)


def run(engine, request_id, prompt, params):
    engine.add_request(request_id, prompt, params)
    records, reasons = [], []
    while engine.has_unfinished_requests():
        for output in engine.step():
            assert output.error is None, output.error
            for delta in output.choices:
                records.extend(delta.logprobs)
                reasons.append(delta.finish_reason)
    return records, [r for r in reasons if r]


def test_scored_tokens_get_the_logprobs_their_generation_reported(default_engine):
    prompt = chat_prompt(default_engine, "What is the capital of France?")
    generated, _ = run(default_engine, "gen", prompt, SamplingParams(temperature=0, max_tokens=12, logprobs=True,
                                                                     top_logprobs=3))
    tokens = prompt + [r.token_id for r in generated]
    scored, reasons = run(default_engine, "score", tokens, SCORING)
    assert [r.token_id for r in scored] == tokens[1:]  # every token but the first, the chat template's ends included
    assert reasons == ["length"]
    for mine, theirs in zip(scored[len(prompt) - 1:], generated):
        # Scoring computes the prompt's keys and values in decode rows, the generation in a prefill: in bf16
        # (this engine's weights as loaded) their sums round differently; the int4 row kernels give the same
        # bits (tests/server/completions/test_openai_completions.py checks that through the server).
        assert mine.logprob == pytest.approx(theirs.logprob, abs=0.1)
        assert [t for t, _ in mine.top] == [t for t, _ in theirs.top]
    assert all(r.logprob <= 0 and len(r.top) == 3 for r in scored)


def test_a_scored_prompt_fits_when_its_own_tokens_do(default_engine):
    prompt = chat_prompt(default_engine, "Hi")
    with pytest.raises(ValueError, match="at least 2 tokens"):
        default_engine.add_request("short", prompt[:1], SCORING)
    assert not default_engine.has_unfinished_requests()


@pytest.mark.parametrize("field, value", [("n", 2), ("max_tokens", 4), ("temperature", 0.5), ("stop", ("x",)),
                                          ("ignore_eos", False), ("logprobs", False)])
def test_scoring_refuses_what_would_change_the_forced_tokens(field, value):
    fields = {"temperature": 0, "logprobs": True, "ignore_eos": True, "is_scoring": True, field: value}
    with pytest.raises(ParamError) as info:
        SamplingParams(**fields)
    assert info.value.param == field
