"""/v1/completions batch lines get the body the server's /v1/completions answers (ids and times aside)."""

from __future__ import annotations

from hearth.server.batch.job import BatchJob
from tests.server.batch.conftest import MODEL, comparable, line, read_records, write_lines

URL = "/v1/completions"


def completion(**fields) -> dict:
    return {"model": MODEL, "prompt": "The capital of France is", "max_tokens": 4, "temperature": 0, **fields}


GOOD = [
    completion(),
    completion(prompt=["One, two, three,", "A, B, C,"], n=2, max_tokens=3),
    completion(prompt=[504, 3575, 282, 4649, 314], max_tokens=3),  # token ids
    completion(prompt=[[504, 3575], [330, 28, 389, 28]], max_tokens=2),  # lists of token ids
    completion(prompt="The capital of France is Paris", echo=True, max_tokens=0, logprobs=2),  # prompt scoring
    completion(echo=True, max_tokens=0),  # no engine request at all
    completion(prompt=["Hello there", "Good morning"], echo=True, max_tokens=3, logprobs=1),  # scored, then generated
    completion(prompt="Once upon a time", max_tokens=6, temperature=1.0, seed=3, n=2, best_of=3, logprobs=0),
    completion(prompt="1, 2, 3, 4,", max_tokens=12, stop=[" 6"], frequency_penalty=0.5, presence_penalty=0.5),
    completion(temperature=0.8, seed=7, logit_bias={"7042": -100}, max_tokens=5),
]


def test_completion_lines_get_the_servers_body(tmp_path, batch_runner, app_client):
    source = write_lines(tmp_path / "requests.jsonl", [line(f"c{i}", body, url=URL) for i, body in enumerate(GOOD)])
    summary = BatchJob(source, tmp_path / "results.jsonl").run(batch_runner, is_quiet=True)
    assert summary.is_complete and summary.statuses[200] == len(GOOD)
    by_id = {r["custom_id"]: r for r in read_records(tmp_path / "results.jsonl")}
    for i, body in enumerate(GOOD):
        server = app_client.post(URL, json=body)
        assert server.status_code == 200, server.text
        got = by_id[f"c{i}"]
        assert got["error"] is None and got["response"]["status_code"] == 200
        assert got["response"]["body"]["object"] == "text_completion"
        assert got["response"]["request_id"] == got["response"]["body"]["id"]
        assert comparable(got["response"]["body"]) == comparable(server.json()), body
    scored = by_id["c4"]["response"]["body"]["choices"][0]
    assert scored["text"] == "The capital of France is Paris" and scored["logprobs"]["token_logprobs"][0] is None
    assert summary.num_completion_tokens == sum(by_id[f"c{i}"]["response"]["body"]["usage"]["completion_tokens"]
                                                for i in range(len(GOOD)))
    assert not batch_runner.engine.has_unfinished_requests()


def test_a_best_of_above_the_engines_sequences_is_refused_naming_it(tmp_path, lone_runner):
    source = write_lines(tmp_path / "requests.jsonl", [line("b", completion(best_of=2), url=URL),
                                                       line("n", completion(n=2), url=URL)])
    assert BatchJob(source, tmp_path / "results.jsonl").run(lone_runner, is_quiet=True).is_complete
    errors = {r["custom_id"]: r["response"]["body"]["error"] for r in read_records(tmp_path / "results.jsonl")}
    assert errors["b"]["param"] == "best_of" and "max_num_seqs (1)" in errors["b"]["message"]
    assert errors["n"]["param"] == "n"
