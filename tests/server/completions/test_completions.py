"""POST /v1/completions in process: the prompt shapes, echo and legacy logprobs, n and best_of, and a 400
naming the field for what it cannot honour."""

from __future__ import annotations

import pytest

from hearth.server.completions.protocol import Completion
from tests.server.test_errors import assert_error

MODEL = "smollm2-135m-instruct"


def complete(client, **body):
    payload = {"model": MODEL, "prompt": "The capital of France is", "max_tokens": 4, "temperature": 0}
    payload.update(body)
    return client.post("/v1/completions", json=payload)


def answer(client, **body) -> Completion:
    response = complete(client, **body)
    assert response.status_code == 200, response.text
    return Completion.model_validate(response.json())


def test_a_string_prompt_is_continued(app_client, default_engine):
    body = answer(app_client, max_tokens=8)
    choice = body.choices[0]
    assert "Paris" in choice.text and choice.finish_reason == "length" and choice.logprobs is None
    prompt_ids = default_engine.tokenizer("The capital of France is").input_ids
    assert body.usage.prompt_tokens == len(prompt_ids) and body.usage.completion_tokens == 8
    # The same prompt as token ids is the same request.
    assert answer(app_client, prompt=prompt_ids, max_tokens=8).choices[0].text == choice.text


def test_several_prompts_get_n_choices_each_in_order(app_client, default_engine):
    prompts = ["One, two, three,", "A, B, C,"]
    body = answer(app_client, prompt=prompts, n=2, max_tokens=3)
    assert [c.index for c in body.choices] == [0, 1, 2, 3]
    alone = [answer(app_client, prompt=p, max_tokens=3).choices[0].text for p in prompts]
    assert [c.text for c in body.choices] == [alone[0], alone[0], alone[1], alone[1]]  # greedy: n equal choices
    as_ids = [default_engine.tokenizer(p).input_ids for p in prompts]
    assert [c.text for c in answer(app_client, prompt=as_ids, max_tokens=3).choices] == alone
    assert body.usage.prompt_tokens == sum(len(ids) for ids in as_ids)


def test_echo_with_max_tokens_0_scores_the_prompt(app_client, default_engine):
    text = "The capital of France is Paris"
    body = answer(app_client, prompt=text, max_tokens=0, echo=True, logprobs=2)
    choice = body.choices[0]
    ids = default_engine.tokenizer(text).input_ids
    assert choice.text == text and choice.finish_reason == "length" and body.usage.completion_tokens == 0
    lp = choice.logprobs
    assert "".join(lp.tokens) == text and len(lp.tokens) == len(ids)
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None  # nothing precedes the first token
    assert all(v < 0 for v in lp.token_logprobs[1:])
    # Each entry holds the 2 best tokens, and the prompt's own token among them (up to logprobs + 1).
    for token, logprob, top in zip(lp.tokens[1:], lp.token_logprobs[1:], lp.top_logprobs[1:]):
        assert top[token] == logprob and 2 <= len(top) <= 3 and max(top.values()) >= logprob
    assert lp.text_offset == [len("".join(lp.tokens[:i])) for i in range(len(lp.tokens))]
    # " Paris" after "The capital of France is" is the model's first choice.
    assert lp.token_logprobs[-1] == max(lp.top_logprobs[-1].values())


def test_echo_with_generation_continues_the_prompt_and_its_logprobs(app_client):
    plain = answer(app_client, max_tokens=3, logprobs=1).choices[0]
    echoed = answer(app_client, max_tokens=3, logprobs=1, echo=True).choices[0]
    assert echoed.text == "The capital of France is" + plain.text
    num_prompt = len(echoed.logprobs.tokens) - len(plain.logprobs.tokens)
    assert echoed.logprobs.tokens[num_prompt:] == plain.logprobs.tokens
    assert echoed.logprobs.token_logprobs[num_prompt:] == plain.logprobs.token_logprobs
    assert echoed.logprobs.text_offset[num_prompt] == len("The capital of France is")
    assert answer(app_client, echo=True, max_tokens=0).choices[0].text == "The capital of France is"


def test_best_of_returns_the_likeliest_choices(app_client):
    body = answer(app_client, prompt="Once upon a time", max_tokens=6, temperature=1.0, seed=3, n=4, logprobs=0)
    totals = sorted((sum(c.logprobs.token_logprobs) for c in body.choices), reverse=True)
    best = answer(app_client, prompt="Once upon a time", max_tokens=6, temperature=1.0, seed=3, n=2, best_of=4,
                  logprobs=0)
    assert [sum(c.logprobs.token_logprobs) for c in best.choices] == pytest.approx(totals[:2])
    assert best.usage.completion_tokens == body.usage.completion_tokens  # all 4 were generated
    without = answer(app_client, prompt="Once upon a time", max_tokens=6, temperature=1.0, seed=3, n=2, best_of=4)
    assert [c.text for c in without.choices] == [c.text for c in best.choices] and without.choices[0].logprobs is None


def test_sampling_fields_keep_their_meaning(app_client):
    seeded = [answer(app_client, temperature=1.0, seed=7, max_tokens=6).choices[0].text for _ in range(2)]
    assert seeded[0] == seeded[1]
    stopped = answer(app_client, prompt="1, 2, 3, 4,", max_tokens=12, stop=[" 6"]).choices[0]
    assert stopped.finish_reason == "stop" and " 6" not in stopped.text and "5" in stopped.text
    paris = answer(app_client, max_tokens=1, logprobs=0).choices[0].logprobs.tokens[0]
    token_id = app_client.app.state.adapter.tokenizer(paris, add_special_tokens=False).input_ids[0]
    banned = answer(app_client, max_tokens=1, logit_bias={str(token_id): -100}).choices[0]
    assert banned.text != paris
    penalised = answer(app_client, prompt="the the the the", max_tokens=8, frequency_penalty=2.0,
                       presence_penalty=2.0).choices[0].text
    assert penalised != answer(app_client, prompt="the the the the", max_tokens=8).choices[0].text
    assert answer(app_client, user="someone").choices[0].text


@pytest.mark.parametrize("field, value, code", [
    ("suffix", " and that is all.", "unsupported_parameter"), ("logprobs", 6, "invalid_value"),
    ("logprobs", -1, "invalid_value"), ("max_tokens", -1, "invalid_value"), ("best_of", 1, "invalid_value"),
    ("n", 0, "invalid_value"), ("temperature", 2.5, "invalid_value"), ("top_p", 0, "invalid_value"),
    ("frequency_penalty", 3, "invalid_value"), ("presence_penalty", -3, "invalid_value"),
    ("logit_bias", {"x": 1}, None), ("stop", ["a", "b", "c", "d", "e"], "invalid_value"),
    ("stream_options", {"include_usage": True}, None), ("colour", "red", "unrecognized_argument"),
    ("prompt", [], "invalid_value"), ("prompt", "", "invalid_value"), ("prompt", [49152], "invalid_value"),
    ("prompt", [[1, 2], []], "invalid_value"), ("seed", "x", "invalid_value"),
])
def test_what_it_cannot_honour_is_a_400_naming_the_field(app_client, field, value, code):
    body = {field: value, "n": 2} if field == "best_of" else {field: value}
    error = assert_error(complete(app_client, **body), 400, code=code)
    assert error["param"] is not None and error["param"].startswith(field)


def test_streamed_best_of_and_context_overflow_are_400s(app_client, default_engine):
    assert_error(complete(app_client, stream=True, n=1, best_of=2), 400, param="best_of")
    too_long = "word " * default_engine.max_model_len
    assert_error(complete(app_client, prompt=too_long), 400, param="prompt", code="context_length_exceeded")
    assert_error(complete(app_client, prompt=["hi", too_long]), 400, param="prompt.1",
                 code="context_length_exceeded")
    assert_error(complete(app_client, model="gpt-7"), 404, param="model", code="model_not_found")
    assert_error(app_client.post("/v1/completions", json={"model": MODEL}), 400, param="prompt",
                 code="missing_required_parameter")
    assert complete(app_client).status_code == 200  # the engine still serves
