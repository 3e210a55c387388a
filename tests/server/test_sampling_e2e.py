"""Sampling fields end to end on the default model, through /v1/chat/completions."""

from __future__ import annotations

import json
from collections import Counter

import pytest

MODEL = "smollm2-135m-instruct"
STORY = [{"role": "user", "content": "Write a short story about a cat who likes to sing."}]


def post(client, **body):
    response = client.post("/v1/chat/completions", json={"model": MODEL, **body})
    assert response.status_code == 200, response.text
    return response.json()


def stream_text(client, **body) -> tuple[str, list[dict]]:
    response = client.post("/v1/chat/completions", json={"model": MODEL, "stream": True, **body})
    chunks = [json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: {")]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    return text, chunks


@pytest.mark.parametrize("field", ["frequency_penalty", "presence_penalty"])
def test_greedy_penalised_choice_maximises_raw_logprob_minus_penalty(app_client, field):
    """Each chosen token maximises raw_logprob - 1.5 * count (or 1.5 * seen) among the returned top-20
    raw alternatives, counts over the tokens generated before it."""
    body = post(app_client, messages=STORY, temperature=0, max_completion_tokens=48, logprobs=True, top_logprobs=20,
                **{field: 1.5})
    content = body["choices"][0]["logprobs"]["content"]
    assert len(content) >= 20
    counts: Counter[bytes] = Counter()
    num_penalised = 0
    for entry in content:
        def penalised(item):
            count = counts[bytes(item["bytes"])]
            return item["logprob"] - 1.5 * (count if field == "frequency_penalty" else count > 0)

        chosen = penalised(entry)
        best = max(penalised(alt) for alt in entry["top_logprobs"])
        assert chosen >= best - 1e-4, (entry["token"], chosen, best)
        num_penalised += entry["token"] != entry["top_logprobs"][0]["token"]
        counts[bytes(entry["bytes"])] += 1
    assert num_penalised > 0  # the penalty changed at least one choice away from the raw argmax


def test_streamed_and_plain_answers_match_with_logprobs_and_seed(app_client):
    settings = {"messages": STORY, "temperature": 0.9, "top_p": 0.9, "seed": 42, "max_completion_tokens": 40,
                "logprobs": True, "top_logprobs": 3}
    plain = post(app_client, **settings)["choices"][0]
    text, chunks = stream_text(app_client, **settings)
    assert text == plain["message"]["content"]
    streamed_logprobs = [e for c in chunks if c["choices"] for e in (c["choices"][0]["logprobs"] or {}).get("content") or []]
    assert streamed_logprobs == plain["logprobs"]["content"]


def test_stop_string_is_cut_the_same_streamed_and_not(app_client):
    free = post(app_client, messages=STORY, temperature=0, max_completion_tokens=60)["choices"][0]["message"]["content"]
    words = free.split()
    stop = " ".join(words[5:7])  # two words: crosses a token boundary
    plain = post(app_client, messages=STORY, temperature=0, max_completion_tokens=60, stop=[stop, "zzzz"])["choices"][0]
    assert plain["finish_reason"] == "stop"
    assert plain["message"]["content"] == free[:free.index(stop)]
    text, chunks = stream_text(app_client, messages=STORY, temperature=0, max_completion_tokens=60, stop=stop)
    assert text == plain["message"]["content"]
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]] == ["stop"]


def test_logit_bias_forces_and_bans_tokens(app_client, default_engine):
    token = default_engine.tokenizer.encode(" banana", add_special_tokens=False)[0]
    forced = post(app_client, messages=STORY, temperature=0, max_completion_tokens=5, logit_bias={str(token): 100})
    assert forced["choices"][0]["message"]["content"] == default_engine.tokenizer.decode([token] * 5)
    free = post(app_client, messages=STORY, temperature=0, max_completion_tokens=5, logprobs=True)
    first = free["choices"][0]["logprobs"]["content"][0]
    first_id = default_engine.tokenizer.convert_tokens_to_ids(
        default_engine.tokenizer.convert_ids_to_tokens(default_engine.tokenizer.encode(first["token"], add_special_tokens=False))[0])
    banned = post(app_client, messages=STORY, temperature=0, max_completion_tokens=5, logprobs=True,
                  logit_bias={str(first_id): -100})
    assert banned["choices"][0]["logprobs"]["content"][0]["token"] != first["token"]


def test_n_choices_with_seed_are_repeatable_and_distinct(app_client):
    settings = {"messages": STORY, "temperature": 1.0, "n": 3, "seed": 5, "max_completion_tokens": 24}
    first = [c["message"]["content"] for c in post(app_client, **settings)["choices"]]
    second = [c["message"]["content"] for c in post(app_client, **settings)["choices"]]
    assert first == second and len(set(first)) == 3
