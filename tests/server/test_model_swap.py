"""A live server with four models of three architectures and two resident at a time."""

from __future__ import annotations

import concurrent.futures as cf

import httpx
import pytest

from tests.server.conftest import start_server, stop_server, wait_for_no_pages

MODELS = ("llama", "qwen2", "qwen3", "mistral")  # llama and mistral share the Llama layout


@pytest.fixture(scope="module")
def swap_server(checkpoints, tmp_path_factory):
    d = tmp_path_factory.mktemp("swap")
    cfg = d / "deploy.yaml"
    cfg.write_text("models:\n" + "".join(f"  - {{name: {m}, path: {checkpoints[m]}}}\n" for m in MODELS)
                   + "kv_cache_memory: 64MiB\nmax_resident_models: 2\napi_key: k\n")
    log = str(d / "server.log")
    proc, base = start_server({}, "--config", str(cfg), log_path=log)
    yield base
    assert stop_server(proc) == 0, open(log).read()[-3000:]


H = {"Authorization": "Bearer k"}


def _metric(base: str, name: str) -> dict[str, float]:
    out = {}
    for line in httpx.get(base + "/metrics").text.splitlines():
        if line.startswith(name + "{"):
            out[line.split("{", 1)[1].split("}")[0]] = float(line.rsplit(" ", 1)[1])
    return out


def test_concurrent_requests_to_four_models_all_complete(swap_server):
    import openai

    client = openai.OpenAI(base_url=swap_server + "/v1", api_key="k", max_retries=0, timeout=120)
    listed = httpx.get(swap_server + "/v1/models", headers=H).json()["data"]
    assert [m["id"] for m in listed] == list(MODELS)
    assert sum(m["resident"] for m in listed) == 2

    def one(i):
        r = client.completions.create(model=MODELS[i % 4], prompt=f"hello {i}", max_tokens=6 + i % 3,
                                      temperature=0, extra_body={"ignore_eos": True})
        return r.usage.completion_tokens, 6 + i % 3

    with cf.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, range(24)))
    assert all(got == want for got, want in results)
    listed = httpx.get(swap_server + "/v1/models", headers=H).json()["data"]
    assert sum(m["resident"] for m in listed) <= 2
    loads = _metric(swap_server, "seallm:model_loads_total")
    assert sum(loads.values()) >= 2  # at least the two non-resident models were loaded
    resident = _metric(swap_server, "seallm:model_resident")
    assert sum(resident.values()) <= 2
    wait_for_no_pages(swap_server)


def test_load_and_unload_endpoints(swap_server):
    r = httpx.post(swap_server + "/v1/models/qwen3/load", headers=H, timeout=60)
    assert r.status_code == 200 and r.json()["resident"] is True
    r = httpx.post(swap_server + "/v1/models/qwen3/unload", headers=H, timeout=60)
    assert r.status_code == 200 and r.json()["resident"] is False
    assert httpx.get(swap_server + "/v1/models/qwen3", headers=H).json()["resident"] is False
    r = httpx.post(swap_server + "/v1/models/nope/load", headers=H)
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    assert httpx.post(swap_server + "/v1/models/qwen3/load").status_code == 401  # API key required
    seconds = _metric(swap_server, "seallm:model_load_seconds_count")
    assert sum(seconds.values()) >= 1


def test_force_unload_aborts_in_flight_requests(swap_server):
    import json

    httpx.post(swap_server + "/v1/models/llama/load", headers=H, timeout=60).raise_for_status()
    reasons = []
    with httpx.stream("POST", swap_server + "/v1/completions", headers=H, timeout=120, json={
            "model": "llama", "prompt": "x", "max_tokens": 1000, "ignore_eos": True, "stream": True}) as resp:
        assert resp.status_code == 200
        lines = resp.iter_lines()
        for line in lines:
            if line.startswith("data: {"):
                break  # generating: now force the unload
        r = httpx.post(swap_server + "/v1/models/llama/unload?force=true", headers=H, timeout=60)
        assert r.status_code == 200 and r.json()["resident"] is False
        for line in lines:
            if line.startswith("data: {"):
                reasons += [c["finish_reason"] for c in json.loads(line[6:])["choices"] if c["finish_reason"]]
    assert reasons == ["abort"]
    wait_for_no_pages(swap_server)
