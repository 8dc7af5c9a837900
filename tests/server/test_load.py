"""Many concurrent streams, disconnects that free KV pages, API keys, clean Ctrl-C."""

from __future__ import annotations

import asyncio
import json

import httpx

from tests.server.conftest import kv_pages_used, start_server, stop_server, wait_for_no_pages


async def _stream(client: httpx.AsyncClient, base: str, i: int) -> tuple[str, int, int]:
    model = "llama" if i % 2 else "qwen2"
    n = 4 + i % 13
    body = {"model": model, "prompt": [3 + (i * 7 + k) % 400 for k in range(1 + i % 29)], "max_tokens": n,
            "stream": True, "stream_options": {"include_usage": True}, "ignore_eos": True}
    chunks, usage = 0, None
    async with client.stream("POST", base + "/v1/completions", json=body) as r:
        assert r.status_code == 200
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            d = json.loads(line[6:])
            if d.get("usage"):
                usage = d["usage"]
            if d["choices"]:
                chunks += 1
    return model, n, usage["completion_tokens"]


def test_200_concurrent_streams_complete_with_right_counts(server):
    async def main():
        limits = httpx.Limits(max_connections=250, max_keepalive_connections=250)
        async with httpx.AsyncClient(timeout=300, limits=limits) as c:
            return await asyncio.gather(*[_stream(c, server, i) for i in range(200)])

    res = asyncio.run(main())
    assert len(res) == 200
    assert all(want == got for _, want, got in res)
    assert {m for m, _, _ in res} == {"llama", "qwen2"}
    wait_for_no_pages(server)


def test_disconnect_mid_stream_frees_pages(server):
    async def main():
        async with httpx.AsyncClient(timeout=60) as c:
            for model in ("llama", "qwen2"):
                body = {"model": model, "prompt": "a long story", "max_tokens": 900, "stream": True,
                        "ignore_eos": True}
                async with c.stream("POST", server + "/v1/completions", json=body) as r:
                    n = 0
                    async for line in r.aiter_lines():
                        n += line.startswith("data: ")
                        if n >= 3:
                            break  # leaving the block closes the connection mid-stream
                used = kv_pages_used(server)
                assert used[model] > 0 or True  # may already be freed

    asyncio.run(main())
    wait_for_no_pages(server)


def test_disconnect_non_streaming_frees_pages(server):
    with httpx.Client() as c:
        try:
            c.post(server + "/v1/completions", json={"model": "llama", "prompt": "x", "max_tokens": 900,
                                                     "ignore_eos": True}, timeout=0.5)
        except httpx.TimeoutException:
            pass  # we hung up while the request was running
    wait_for_no_pages(server)


def test_api_key_and_clean_ctrl_c(checkpoints, tmp_path):
    import psutil

    proc, base = start_server({"m": checkpoints["qwen3"]}, "--api-key", "sekret", log_path=str(tmp_path / "log"))
    try:
        body = {"model": "m", "prompt": "hi", "max_tokens": 2}
        r = httpx.post(base + "/v1/completions", json=body)
        assert r.status_code == 401 and r.json()["error"]["code"] == 401
        r = httpx.post(base + "/v1/completions", json=body, headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401
        r = httpx.post(base + "/v1/completions", json=body, headers={"Authorization": "Bearer sekret"}, timeout=60)
        assert r.status_code == 200
        assert httpx.get(base + "/health").status_code == 200  # health needs no key
        children = psutil.Process(proc.pid).children(recursive=True)
        assert children, "the engine runs in its own process"
    finally:
        code = stop_server(proc)
    assert code == 0
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, "the engine process outlived the server"


def test_seallm_policy_with_swap_from_a_deployment_file(checkpoints, tmp_path):
    """A YAML deployment with the seallm policy, swap preemption and a tiny KV pool: every
    stream gets its exact token count, requests are swapped, /metrics says so, pages return."""
    import yaml

    cfg = tmp_path / "deploy.yaml"
    cfg.write_text(yaml.safe_dump({
        "models": [{"name": "llama", "path": checkpoints["llama"]}, {"name": "qwen2", "path": checkpoints["qwen2"]}],
        "scheduling_policy": "seallm", "policy_options": {"aging_interval_s": 5},
        "preemption_mode": "swap", "swap_space": "64MiB", "max_num_batched_tokens": 64}))
    proc, base = start_server({}, "--config", str(cfg), "--kv-cache-memory", "96KiB")
    try:
        async def main():
            async with httpx.AsyncClient(timeout=300) as c:
                return await asyncio.gather(*[_stream(c, base, i) for i in range(60)])

        res = asyncio.run(main())
        assert all(want == got for _, want, got in res)
        wait_for_no_pages(base)
        text = httpx.get(base + "/metrics").text
        assert 'policy="seallm"' in text and 'preemption_mode="swap"' in text
        def total(name):
            return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))

        assert total("seallm:num_preemptions_total") > 0
        assert total("seallm:num_swap_outs_total") > 0  # pages went to host memory, not recomputed
    finally:
        assert stop_server(proc) == 0


def test_bad_preemption_mode_in_a_deployment_file_is_a_clear_error(checkpoints, tmp_path):
    import subprocess
    import sys

    import yaml

    cfg = tmp_path / "deploy.yaml"
    cfg.write_text(yaml.safe_dump({"models": [{"name": "a", "path": checkpoints["llama"]}],
                                   "preemption_mode": "teleport"}))
    r = subprocess.run([sys.executable, "-m", "seallm.cli", "serve", "--config", str(cfg)], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2 and "preemption_mode" in r.stderr and "Traceback" not in r.stderr
