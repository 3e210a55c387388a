"""Air-gapped serving: the server starts and answers inside a network namespace that has only loopback
(`unshare -n`), where every network access but loopback is impossible. Skipped where the kernel or the
sandbox refuses a new network namespace. The server is stopped with SIGTERM, which must exit 0."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# Runs inside the namespace: brings lo up, shows what network there is, serves one request, stops.
INSIDE = textwrap.dedent('''
    import json, signal, subprocess, sys, time
    import httpx

    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    # A routing lookup only: no packet is sent.
    route = subprocess.run(["ip", "route", "get", "192.0.2.1"], capture_output=True, text=True)
    server = subprocess.Popen([sys.executable, "-m", "hearth.server", "--models", sys.argv[1], "--port", "18123",
                               "--log-level", "warning"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = "http://127.0.0.1:18123"
    answer, status = None, None
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and server.poll() is None:
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.3)
    if server.poll() is None:
        response = httpx.post(url + "/v1/chat/completions", timeout=120, json={
            "model": "smollm2-135m-instruct", "temperature": 0, "max_completion_tokens": 12,
            "messages": [{"role": "user", "content": "What is the capital of France?"}]})
        status, answer = response.status_code, response.json()
        server.send_signal(signal.SIGTERM)
    try:
        output = server.communicate(timeout=60)[0]
    except subprocess.TimeoutExpired:
        server.kill()
        output = server.communicate()[0]
    print(json.dumps({"links": links, "route_error": route.returncode != 0, "status": status, "answer": answer,
                      "returncode": server.returncode, "output": output[-3000:]}))
''')


def namespace_refused() -> str | None:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "unshare or ip is not installed"
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"the kernel refuses a network namespace: {probe.stderr.strip()}"
    return None


@pytest.mark.slow
def test_serves_a_request_with_only_loopback(tmp_path, default_entry):
    reason = namespace_refused()
    if reason is not None:
        pytest.skip(reason)
    script = tmp_path / "inside.py"
    script.write_text(INSIDE)
    run = subprocess.run(["unshare", "-n", sys.executable, str(script), str(REPO / "models.yaml")],
                         cwd=REPO, capture_output=True, text=True, timeout=420)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    names = [line.split(":")[1].strip() for line in result["links"].splitlines()]
    assert names == ["lo"], result["links"]
    assert result["route_error"]  # nothing but loopback is reachable
    assert result["status"] == 200, result
    assert "Paris" in result["answer"]["choices"][0]["message"]["content"]
    assert result["returncode"] == 0 and "Traceback" not in result["output"], result["output"]
