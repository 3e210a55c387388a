"""/metrics in Prometheus' text format: request counters and histograms, engine gauges."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from hearth.server.http.metrics import Metrics


def samples(text: str) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(metrics: dict, name: str, **labels) -> float:
    return metrics.get((name, tuple(sorted(labels.items()))), 0.0)


def test_a_request_moves_the_counters_and_histograms(app_client):
    before = samples(app_client.get("/metrics").text)
    body = {"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "Count to ten."}],
            "max_completion_tokens": 6, "temperature": 0, "n": 2}
    usage = app_client.post("/v1/chat/completions", json=body).json()["usage"]
    app_client.post("/v1/chat/completions", json=dict(body, temperature=9))
    response = app_client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    after = samples(response.text)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("hearth_requests_total", status="200") == 1
    assert delta("hearth_requests_total", status="400") == 1
    assert delta("hearth_request_finish_reasons_total", finish_reason="length") == 2
    assert delta("hearth_prompt_tokens_total") == usage["prompt_tokens"]
    assert delta("hearth_generation_tokens_total") == usage["completion_tokens"] == 12
    for name in ("hearth_time_to_first_token_seconds", "hearth_time_per_output_token_seconds",
                 "hearth_e2e_request_latency_seconds", "hearth_request_queue_time_seconds"):
        assert delta(f"{name}_count") == 1, name
    assert value(after, "hearth_kv_blocks_total") > 0
    for name in ("hearth_kv_blocks_used", "hearth_running_seqs", "hearth_waiting_seqs", "hearth_waiting_requests",
                 "hearth_preemptions_total"):
        assert (name, ()) in after, name


def test_prefix_cache_hit_rate_appears_when_the_engine_reports_it():
    stats = {"num_running_seqs": 1, "num_waiting_seqs": 2, "kv_blocks_used": 3, "kv_blocks_total": 10,
             "num_preemptions": 4}
    without = samples(Metrics(lambda: stats, lambda: 0).response().body.decode())
    assert ("hearth_prefix_cache_hit_rate", ()) not in without
    assert value(without, "hearth_preemptions_total") == 4 and value(without, "hearth_waiting_seqs") == 2
    with_rate = samples(Metrics(lambda: dict(stats, prefix_cache_hit_rate=0.25), lambda: 0).response().body.decode())
    assert value(with_rate, "hearth_prefix_cache_hit_rate") == 0.25


def test_every_metric_is_named_hearth(app_client):
    names = {family.name for family in text_string_to_metric_families(app_client.get("/metrics").text)}
    assert names and all(name.startswith("hearth_") for name in names), names
