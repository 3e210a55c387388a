"""/v1/responses batch lines get the response object the server's /v1/responses answers (ids and times
aside): text, instructions, structured output, a function call and its output sent back."""

from __future__ import annotations

from hearth.server.batch.job import BatchJob
from tests.server.batch.conftest import MODEL, line, read_records, write_lines

URL = "/v1/responses"
TOOLS = [{"type": "function", "name": "get_weather", "description": "Current weather in a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}},
                         "required": ["city"], "additionalProperties": False}}]
SCHEMA = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}}, "required": ["city"],
          "additionalProperties": False}
HISTORY = [{"role": "user", "content": "What is the weather in Paris?"},
           {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"city": "Paris"}'},
           {"type": "function_call_output", "call_id": "call_1", "output": '{"temperature_c": 21}'}]


def response(**fields) -> dict:
    return {"model": MODEL, "input": "What is the capital of France?", "max_output_tokens": 12, "temperature": 0,
            **fields}


GOOD = [
    response(),
    response(instructions="Answer in French.", top_logprobs=2),
    response(input=[{"role": "user", "content": [{"type": "input_text", "text": "Name a colour."}]}],
             top_p=0.9),  # no seed in this API: greedy, so that two runs agree
    response(input="Write a long story about a dragon.", max_output_tokens=5),  # incomplete
    response(max_output_tokens=40, text={"format": {"type": "json_schema", "name": "capital", "schema": SCHEMA}}),
    response(input="What is the weather in Paris?", tools=TOOLS, tool_choice="required", parallel_tool_calls=False,
             max_output_tokens=40),
    response(input=HISTORY, tools=TOOLS, max_output_tokens=20),
]


def comparable(body: dict) -> dict:
    """A response object without what differs between two runs of the same request (ids, call ids, times, and
    the prompt tokens the prefix cache held, which depends on what ran before)."""
    kept = {k: v for k, v in body.items() if k not in ("id", "created_at", "completed_at")}
    kept["usage"] = {k: v for k, v in body["usage"].items() if k != "input_tokens_details"}
    kept["output"] = [{k: v for k, v in item.items() if k not in ("id", "call_id")} for item in body["output"]]
    return kept


def test_response_lines_get_the_servers_response_object(tmp_path, batch_runner, app_client):
    source = write_lines(tmp_path / "requests.jsonl", [line(f"r{i}", body, url=URL) for i, body in enumerate(GOOD)])
    summary = BatchJob(source, tmp_path / "results.jsonl").run(batch_runner, is_quiet=True)
    assert summary.is_complete and summary.statuses[200] == len(GOOD)
    by_id = {r["custom_id"]: r for r in read_records(tmp_path / "results.jsonl")}
    for i, body in enumerate(GOOD):
        server = app_client.post(URL, json=body)
        assert server.status_code == 200, server.text
        got = by_id[f"r{i}"]
        assert got["error"] is None and got["response"]["status_code"] == 200
        assert got["response"]["request_id"] == got["response"]["body"]["id"]
        assert comparable(got["response"]["body"]) == comparable(server.json()), body
    bodies = [by_id[f"r{i}"]["response"]["body"] for i in range(len(GOOD))]
    assert bodies[0]["object"] == "response" and bodies[0]["status"] == "completed"
    assert bodies[3]["status"] == "incomplete"
    assert [item["type"] for item in bodies[5]["output"]] == ["function_call"]
    assert summary.num_completion_tokens == sum(b["usage"]["output_tokens"] for b in bodies)
