"""Several replicas behind one endpoint: each its own engine process, requests routed to a
replica that lists their model, and replicas that fail independently."""

from __future__ import annotations

import concurrent.futures as cf
import os
import signal
import time

import httpx
import pytest

from tests.server.conftest import start_server, stop_server, wait_for_no_pages


@pytest.fixture(scope="module")
def two_replicas(checkpoints, tmp_path_factory):
    d = tmp_path_factory.mktemp("replicas")
    cfg = d / "deploy.yaml"
    cfg.write_text(f"models:\n  - {{name: llama, path: {checkpoints['llama']}}}\n"
                   f"  - {{name: qwen2, path: {checkpoints['qwen2']}}}\n"
                   "kv_cache_memory: 32MiB\nengine_restart_backoff_s: 0.2\n"
                   "replicas:\n  - {name: r0, models: [llama], threads: 1}\n"
                   "  - {name: r1, models: [llama, qwen2], threads: 1}\n")
    log = str(d / "server.log")
    proc, base = start_server({}, "--config", str(cfg), log_path=log)
    yield base
    assert stop_server(proc) == 0, open(log).read()[-3000:]


def _complete(base, model, i, n=5):
    r = httpx.post(base + "/v1/completions", json={"model": model, "prompt": f"hi {i}", "max_tokens": n,
                                                   "temperature": 0, "ignore_eos": True}, timeout=120)
    return r.status_code, r.json()


def _replicas(base):
    return {r["name"]: r for r in httpx.get(base + "/health").json()["replicas"]}


def test_requests_spread_over_the_replicas_that_list_their_model(two_replicas):
    h = httpx.get(two_replicas + "/health")
    assert h.status_code == 200
    reps = _replicas(two_replicas)
    assert reps["r0"]["models"] == ["llama"] and reps["r1"]["models"] == ["llama", "qwen2"]
    assert reps["r0"]["pid"] != reps["r1"]["pid"]
    models = [m["id"] for m in httpx.get(two_replicas + "/v1/models").json()["data"]]
    assert models == ["llama", "qwen2"]
    before = {n: r["requests_routed"] for n, r in reps.items()}
    jobs = [("llama", i) for i in range(12)] + [("qwen2", i) for i in range(4)]
    with cf.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda a: _complete(two_replicas, *a), jobs))
    assert all(code == 200 and body["usage"]["completion_tokens"] == 5 for code, body in results)
    routed = {n: r["requests_routed"] - before[n] for n, r in _replicas(two_replicas).items()}
    assert sum(routed.values()) == 16
    assert routed["r0"] >= 2 and routed["r1"] >= 6  # llama on both (least loaded); qwen2 only on r1
    wait_for_no_pages(two_replicas)


def test_greedy_outputs_match_across_replicas(two_replicas):
    code, alone = _complete(two_replicas, "llama", 0, 8)  # idle replicas: the tie goes to r0
    assert code == 200
    with cf.ThreadPoolExecutor(1) as pool:
        long = pool.submit(_complete, two_replicas, "llama", 1, 400)  # keeps one replica busy
        deadline = time.time() + 60
        while time.time() < deadline and not any(r["in_flight"] for r in _replicas(two_replicas).values()):
            time.sleep(0.01)
        busy = [n for n, r in _replicas(two_replicas).items() if r["in_flight"]]
        before = _replicas(two_replicas)
        code, other = _complete(two_replicas, "llama", 0, 8)  # least loaded: the other replica
        after = _replicas(two_replicas)
        assert long.result()[0] == 200
    assert code == 200 and busy
    routed = {n: after[n]["requests_routed"] - before[n]["requests_routed"] for n in after}
    assert routed[busy[0]] == 0 and sum(routed.values()) == 1, routed
    assert other["choices"][0]["text"] == alone["choices"][0]["text"]  # same checkpoint, same greedy tokens


def test_a_dead_replica_costs_only_what_cannot_go_elsewhere(two_replicas):
    reps = _replicas(two_replicas)
    os.kill(reps["r1"]["pid"], signal.SIGKILL)  # the only replica of qwen2
    deadline = time.time() + 10
    while time.time() < deadline and httpx.get(two_replicas + "/health").status_code == 200:
        time.sleep(0.05)
    h = httpx.get(two_replicas + "/health")
    assert h.status_code == 503 and h.json()["status"] == "restarting"
    code, body = _complete(two_replicas, "llama", 1)  # r0 still serves llama
    assert code == 200 and body["usage"]["completion_tokens"] == 5
    deadline = time.time() + 120
    while time.time() < deadline and httpx.get(two_replicas + "/health").status_code != 200:
        code, _ = _complete(two_replicas, "qwen2", 2)
        assert code in (200, 503)  # qwen2 has nowhere else to go while r1 restarts
        time.sleep(0.2)
    assert httpx.get(two_replicas + "/health").status_code == 200
    assert _replicas(two_replicas)["r1"]["restarts"] == 1
    code, body = _complete(two_replicas, "qwen2", 3)
    assert code == 200 and body["usage"]["completion_tokens"] == 5
