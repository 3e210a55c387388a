"""/v1/completions through the official openai client against the served model, and prompt log-likelihoods
that are the chat endpoint's logprobs for the same tokens."""

from __future__ import annotations

import pytest

from hearth.engine.chat import render_chat
from hearth.engine.output.token_text import TokenText

MODEL = "smollm2-135m-instruct"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def is_exact(entry) -> bool:
    """Served weights whose row kernels compute a prompt's keys and values in decode rows with the bits a
    prefill gives (tests/server/test_e2e_openai.py's condition for batch invariance)."""
    import torch

    from hearth.kernels.model import row_attention

    return entry.quantization != "none" and row_attention.unavailable_reason(
        9, 3, 64, torch.bfloat16, torch.device("cpu")) is None


def test_echo_with_max_tokens_0_gives_the_chat_endpoints_logprobs(served_client, default_engine, default_entry):
    chat = served_client.chat.completions.create(model=MODEL, messages=QUESTION, temperature=0, logprobs=True,
                                                 top_logprobs=5, max_completion_tokens=12)
    generated = chat.choices[0].logprobs.content
    tokenizer = default_engine.tokenizer
    token_text = TokenText(tokenizer)
    by_bytes = {token_text.get(i)[1]: i for i in range(len(tokenizer))}
    prompt = render_chat(tokenizer, QUESTION)
    ids = prompt + [by_bytes[bytes(entry.bytes)] for entry in generated]

    scored = served_client.completions.create(model=MODEL, prompt=ids, echo=True, max_tokens=0, logprobs=5)
    choice = scored.choices[0]
    assert choice.finish_reason == "length" and scored.usage.completion_tokens == 0
    assert choice.logprobs.token_logprobs[0] is None and len(choice.logprobs.tokens) == len(ids)
    tail = slice(len(prompt), None)
    assert choice.logprobs.tokens[tail] == [entry.token for entry in generated]
    mine = choice.logprobs.token_logprobs[tail]
    theirs = [entry.logprob for entry in generated]
    if is_exact(default_entry):
        assert mine == theirs
    else:  # bf16 prefill and decode rows round their sums differently
        assert mine == pytest.approx(theirs, abs=0.1)
    for top, entry in zip(choice.logprobs.top_logprobs[tail], generated):
        assert set(top) >= {alt.token for alt in entry.top_logprobs[:3]}


def test_streamed_echo_equals_the_whole_answer(served_client):
    whole = served_client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=6,
                                             temperature=0, echo=True, logprobs=1)
    stream = served_client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=6,
                                              temperature=0, echo=True, logprobs=1, stream=True,
                                              stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].text == "The capital of France is"  # the echo comes first
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text
    tokens = [t for c in chunks if c.choices for t in c.choices[0].logprobs.tokens]
    assert tokens == whole.choices[0].logprobs.tokens
    offsets = [o for c in chunks if c.choices for o in c.choices[0].logprobs.text_offset]
    assert offsets == whole.choices[0].logprobs.text_offset
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 6


def test_n_seeded_choices_differ_and_repeat(served_client):
    def texts():
        response = served_client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=8,
                                                    temperature=1.0, n=3, seed=11)
        assert [c.index for c in response.choices] == [0, 1, 2]
        return [c.text for c in response.choices]

    first = texts()
    assert len(set(first)) > 1 and texts() == first


def test_errors_reach_the_client_as_openai_errors(served_client):
    import openai

    with pytest.raises(openai.BadRequestError) as info:
        served_client.completions.create(model=MODEL, prompt="def f(x):", suffix="    return y")
    assert info.value.param == "suffix"
    with pytest.raises(openai.BadRequestError) as info:
        served_client.completions.create(model=MODEL, prompt="Hi", logprobs=9)
    assert info.value.param == "logprobs"
