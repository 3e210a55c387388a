"""50 lines of good and bad requests through the batch runner, compared with what the server answers."""

from __future__ import annotations

import pytest

from hearth.server.batch.job import BatchJob
from tests.server.batch.conftest import URL, chat, comparable, line, read_records, write_lines

SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
GOOD = [
    chat("What is the capital of France?", temperature=0),
    chat("Name a colour.", temperature=0.9, seed=7),
    chat("Count to five.", temperature=1.0, top_p=0.9, seed=3, n=2),
    chat("Say hello.", temperature=0, logprobs=True, top_logprobs=2),
    chat("List three fruits.", temperature=0.7, top_k=20, min_p=0.05, seed=11, frequency_penalty=0.5),
    chat("Write a word.", temperature=0, stop=["."], max_completion_tokens=8),
    chat("Give a city as json.", temperature=0, response_format={"type": "json_object"}),
    chat("Where is Rome?", temperature=0, response_format={"type": "json_schema",
                                                           "json_schema": {"name": "c", "schema": SCHEMA}}),
    {**chat("Hi.", seed=5), "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi."}]},
    chat("Tell me a fact.", temperature=0.5, seed=1, presence_penalty=1.0, repetition_penalty=1.2, min_tokens=2),
]
BAD = [
    chat("x", temperature=5),
    chat("x", top_p=0),
    chat("x", n=0),
    chat("x", colour="red"),
    chat("x", temperature="hot"),
    {**chat("x"), "messages": []},
    {"messages": [{"role": "user", "content": "x"}]},
    {**chat("x"), "model": "no-such-model"},
    chat("x", max_completion_tokens=100_000),
    chat("x", max_tokens=3, max_completion_tokens=4),
    chat("x", logit_bias={"abc": 1}),
    chat("x", logit_bias={"99999999": 1}),
    chat("x", top_logprobs=3),
    chat("x", stream_options={"include_usage": True}),
    chat("x", response_format={"type": "json_object"}),
    {**chat("x"), "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "a"}}]}]},
    {**chat("x"), "messages": [{"role": "wizard", "content": "x"}]},
    chat("x", response_format={"type": "json_schema", "json_schema": {"name": "s", "schema": {"type": "nope"}}}),
    [1, 2],
    "just a string",
    None,
]


COMPLETION = {"model": "smollm2-135m-instruct", "prompt": "x", "max_tokens": 4}
RESPONSE = {"model": "smollm2-135m-instruct", "input": "x", "max_output_tokens": 4}
# Bodies the server's /v1/completions and /v1/responses refuse (a batch line takes those urls too).
BAD_ELSEWHERE = {
    "/v1/completions": [
        {**COMPLETION, "suffix": " the end."}, {**COMPLETION, "logprobs": 6}, {**COMPLETION, "best_of": 1, "n": 2},
        {**COMPLETION, "colour": "red"}, {**COMPLETION, "prompt": [[1, 2], []]}, {**COMPLETION, "prompt": [49152]},
        {**COMPLETION, "prompt": "word " * 10_000}, {**COMPLETION, "model": "gpt-7"}, {"model": "smollm2-135m-instruct"},
        None,
    ],
    "/v1/responses": [
        {**RESPONSE, "store": True}, {**RESPONSE, "previous_response_id": "resp_1"},
        {**RESPONSE, "tools": [{"type": "web_search"}]}, {**RESPONSE, "reasoning": {"effort": "high"}},
        {**RESPONSE, "background": True}, {**RESPONSE, "temperature": 2.5}, {**RESPONSE, "tool_choice": "required"},
        {**RESPONSE, "input": [{"type": "item_reference", "id": "msg_1"}]}, {"model": "smollm2-135m-instruct"},
        {**RESPONSE, "input": "word " * 10_000},
    ],
}


def batch_lines() -> list:
    lines = [line(f"good-{i}-{j}", body) for j in range(3) for i, body in enumerate(GOOD)]
    lines += [line(f"bad-{i}", body) for i, body in enumerate(BAD)]
    lines += [line(f"bad-{url}-{i}", body, url=url) for url, bodies in BAD_ELSEWHERE.items()
              for i, body in enumerate(bodies)]
    lines += [
        line("wrong-url", chat("x"), url="/v1/embeddings"),
        line("wrong-method", chat("x"), method="GET"),
    ]
    return lines


MALFORMED = [
    '{"custom_id": "broken", "method": "POST", "url": "' + URL + '", "body": {',
    '["not", "an", "object"]',
    {"method": "POST", "url": URL, "body": chat("x")},
    {**line("extra-field", chat("x")), "priority": 1},
    line("streamed", chat("x", stream=True)),
    line("streamed-completion", {**COMPLETION, "stream": True}, url="/v1/completions"),
    line("streamed-response", {**RESPONSE, "stream": True}, url="/v1/responses"),
]


@pytest.fixture(scope="module")
def batch_run(tmp_path_factory, batch_runner):
    folder = tmp_path_factory.mktemp("batch")
    lines = batch_lines()
    assert len(lines) + len(MALFORMED) == 80
    source = write_lines(folder / "requests.jsonl", lines + MALFORMED)
    summary = BatchJob(source, folder / "results.jsonl").run(batch_runner, is_quiet=True)
    return lines, read_records(folder / "results.jsonl"), summary


def test_every_line_gets_exactly_one_record(batch_run):
    lines, records, summary = batch_run
    ids = [r["custom_id"] for r in records]
    expected = [item["custom_id"] for item in lines] + ["broken", "extra-field", "streamed", "streamed-completion",
                                                        "streamed-response"]
    assert sorted(i for i in ids if i is not None) == sorted(expected)
    assert ids.count(None) == 2  # the non-object line and the line without a custom_id
    assert summary.is_complete and summary.num_written == 80
    assert summary.statuses[200] == 3 * len(GOOD)


def test_bad_requests_get_the_servers_status_and_error(batch_run, app_client):
    lines, records, _ = batch_run
    by_id = {r["custom_id"]: r for r in records}
    for item in lines:
        if item["custom_id"].startswith("good"):
            continue
        server = app_client.request(item["method"], item["url"], json=item["body"])
        got = by_id[item["custom_id"]]
        assert got["response"]["status_code"] == server.status_code, item
        assert got["response"]["body"] == server.json(), item
        error = server.json()["error"]
        assert got["error"] == {"code": error["code"], "message": error["message"]}


def test_malformed_lines_get_an_error_record_and_the_run_goes_on(batch_run):
    lines, records, _ = batch_run
    by_id = {r["custom_id"]: r for r in records}
    first = len(lines) + 1  # the line number of MALFORMED[0]
    assert by_id["broken"]["error"]["code"] == "invalid_json"
    assert f"line {first} is not valid JSON" in by_id["broken"]["error"]["message"]
    assert by_id["extra-field"]["error"]["code"] == "unrecognized_argument"
    assert "priority" in by_id["extra-field"]["error"]["message"]
    for custom_id in ("streamed", "streamed-completion", "streamed-response"):  # whatever the url
        streamed = by_id[custom_id]["response"]
        assert streamed["status_code"] == 400 and streamed["body"]["error"]["param"] == "stream", custom_id
    anonymous = sorted(r["error"]["message"] for r in records if r["custom_id"] is None)
    assert anonymous[0].startswith(f"line {first + 1} must be a JSON object")
    assert anonymous[1] == f"line {first + 2} has no custom_id"


def assert_equal_to_the_servers(app_client, records: list[dict], indexes: list[int], copies: int) -> None:
    by_id = {r["custom_id"]: r for r in records}
    for index in indexes:
        server = app_client.post(URL, json=GOOD[index])
        assert server.status_code == 200, server.text
        for j in range(copies):
            got = by_id[f"good-{index}-{j}"]
            assert got["response"]["status_code"] == 200 and got["error"] is None
            assert comparable(got["response"]["body"]) == comparable(server.json()), GOOD[index]
            assert got["response"]["request_id"] == got["response"]["body"]["id"]


def test_results_equal_the_servers_for_the_same_bodies(tmp_path, lone_runner, app_client):
    single = [i for i, body in enumerate(GOOD) if body.get("n", 1) == 1]  # n=2 needs two sequence slots
    source = write_lines(tmp_path / "requests.jsonl", [line(f"good-{i}-0", GOOD[i]) for i in single])
    assert BatchJob(source, tmp_path / "results.jsonl").run(lone_runner, is_quiet=True).is_complete
    assert_equal_to_the_servers(app_client, read_records(tmp_path / "results.jsonl"), single, copies=1)


def test_choices_that_cannot_fit_the_engine_are_refused_not_waited_for(tmp_path, lone_runner):
    source = write_lines(tmp_path / "requests.jsonl", [line("two", chat("Hi.", n=2, seed=1))])
    summary = BatchJob(source, tmp_path / "results.jsonl").run(lone_runner, is_quiet=True)
    assert summary.is_complete
    error = read_records(tmp_path / "results.jsonl")[0]["response"]["body"]["error"]
    assert error["param"] == "n" and "max_num_seqs (1)" in error["message"]


def test_results_equal_the_servers_when_batched_among_other_requests(batch_run, app_client):
    assert_equal_to_the_servers(app_client, batch_run[1], list(range(len(GOOD))), copies=3)
