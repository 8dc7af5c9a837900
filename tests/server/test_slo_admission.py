"""SLOs-Serve through the API: per-request SLOs and classes, the admission verdict in the
response, ``admission: reject`` answering 429 with Retry-After, and try-then-forward routing
across replicas that never loses a request."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.server.conftest import start_server, stop_server, wait_for_no_pages

LOOSE = {"ttft": 30.0, "tpot": 5.0}  # any replica can guarantee this on an idle CPU
IMPOSSIBLE = {"ttft": 1e-6, "tpot": 1e-6}  # no replica can


def _deploy(tmp_path_factory, checkpoints, name, body):
    d = tmp_path_factory.mktemp(name)
    cfg = d / "deploy.yaml"
    cfg.write_text(f"models:\n  - {{name: llama, path: {checkpoints['llama']}}}\nkv_cache_memory: 16MiB\n"
                   "scheduling_policy: slos-serve\n" + body)
    log = str(d / "server.log")
    proc, base = start_server({}, "--config", str(cfg), log_path=log)
    return proc, base, log


@pytest.fixture(scope="module")
def forwarding(checkpoints, tmp_path_factory):
    """Two replicas of one model, try-then-forward routing, best effort on the last try."""
    proc, base, log = _deploy(tmp_path_factory, checkpoints, "slo_fwd",
                              "routing_policy: slo\nslo_classes:\n  - {name: relaxed, ttft: 30, tpot: 5}\n"
                              "replicas:\n  - {name: r0, models: [llama], threads: 1}\n"
                              "  - {name: r1, models: [llama], threads: 1}\n")
    yield base
    assert stop_server(proc) == 0, open(log).read()[-3000:]


@pytest.fixture(scope="module")
def rejecting(checkpoints, tmp_path_factory):
    proc, base, log = _deploy(tmp_path_factory, checkpoints, "slo_rej", "policy_options: {admission: reject}\n")
    yield base
    assert stop_server(proc) == 0, open(log).read()[-3000:]


def _post(base, **extra):
    body = {"model": "llama", "prompt": "hello there", "max_tokens": 4, "temperature": 0, "ignore_eos": True,
            **extra}
    return httpx.post(base + "/v1/completions", json=body, timeout=120)


def _metric(base, name, **labels):
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in httpx.get(base + "/metrics").text.splitlines():
        if line.startswith(f"{name}{{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name}{{{want}}}")


def test_a_request_that_can_be_guaranteed_says_so(forwarding):
    r = _post(forwarding, slo=LOOSE)
    assert r.status_code == 200, r.text
    assert r.json()["admission"] == "guaranteed"
    assert r.json()["usage"]["completion_tokens"] == 4
    r = _post(forwarding, slo_class="relaxed")
    assert r.status_code == 200 and r.json()["admission"] == "guaranteed"
    assert _metric(forwarding, "seallm:num_requests_admitted_total", model="llama", admission="guaranteed") >= 2


def test_the_final_stream_chunk_carries_the_verdict(forwarding):
    chunks = []
    with httpx.stream("POST", forwarding + "/v1/chat/completions", timeout=120,
                      json={"model": "llama", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3,
                            "ignore_eos": True, "stream": True, "slo": LOOSE}) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                chunks.append(json.loads(line[6:]))
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["admission"] == "guaranteed"
    assert all("admission" not in c for c in chunks[:-1])


def test_try_then_forward_serves_what_no_replica_can_guarantee_best_effort(forwarding):
    before = _metric(forwarding, "seallm:num_requests_forwarded_total", model="llama")
    r = _post(forwarding, slo=IMPOSSIBLE)
    assert r.status_code == 200, r.text  # refused by the first replica, best effort on the last
    assert r.json()["admission"] == "best_effort"
    assert r.json()["usage"]["completion_tokens"] == 4
    assert _metric(forwarding, "seallm:num_requests_forwarded_total", model="llama") == before + 1
    assert _metric(forwarding, "seallm:num_requests_admitted_total", model="llama", admission="best_effort") >= 1
    # A class with a per-request override: the override makes it impossible.
    r = _post(forwarding, slo_class="relaxed", slo={"tpot": 1e-6, "ttft": 1e-6})
    assert r.status_code == 200 and r.json()["admission"] == "best_effort"
    wait_for_no_pages(forwarding)


def test_reject_mode_answers_429_with_retry_after(rejecting):
    r = _post(rejecting, slo=IMPOSSIBLE)
    assert r.status_code == 429, r.text
    assert int(r.headers["Retry-After"]) >= 1
    err = r.json()["error"]
    assert "cannot guarantee" in err["message"] and err["type"]
    assert _metric(rejecting, "seallm:num_requests_refused_total", model="llama") >= 1
    # The refusal cost nobody else anything: the next request is guaranteed and served.
    r = _post(rejecting, slo=LOOSE)
    assert r.status_code == 200 and r.json()["admission"] == "guaranteed"
    wait_for_no_pages(rejecting)


@pytest.mark.parametrize("slo,msg", [
    ({"ttft": 1.0, "ttft_slowdown": 3}, "not both"),
    ({"ttft_slowdown": 0.5}, "ttft_slowdown"),
    ({"thinking_tokens": -1}, "thinking_tokens"),
    ({"tpot_thinking": 0}, "tpot_thinking"),
])
def test_invalid_slos_are_400(rejecting, slo, msg):
    r = _post(rejecting, slo=slo)
    assert r.status_code == 400 and msg in r.text


def test_built_in_classes_are_known(rejecting):
    r = _post(rejecting, slo_class="nope")
    assert r.status_code == 400
    for c in ("chatbot", "coding", "summarization", "reasoning", "tool_calling"):
        assert c in r.json()["error"]["message"]
