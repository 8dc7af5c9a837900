"""Admission control (429), the body limit (413), the sequences cap and request-supplied
chat templates, on a server configured with small limits."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
import yaml

from tests.server.conftest import kv_pages_used, start_server, stop_server

LOOP_TEMPLATE = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}x"


@pytest.fixture(scope="module")
def limited(checkpoints, tmp_path_factory):
    d = tmp_path_factory.mktemp("limits")
    cfg = {"models": [{"name": "llama", "path": checkpoints["llama"]}, {"name": "qwen2", "path": checkpoints["qwen2"]}],
           "max_num_seqs": 2, "max_waiting_requests": 4, "max_sequences_per_request": 4,
           "max_request_body": "64KiB", "allow_request_chat_template": True, "chat_template_timeout_s": 1.0}
    (d / "deploy.yaml").write_text(yaml.safe_dump(cfg))
    proc, base = start_server({}, "--config", str(d / "deploy.yaml"), log_path=str(d / "server.log"))
    yield base
    assert stop_server(proc) == 0, (d / "server.log").read_text()[-3000:]


async def _stream(c: httpx.AsyncClient, base: str, i: int):
    body = {"model": "llama", "prompt": [5 + i % 50] * 8, "max_tokens": 24, "ignore_eos": True, "stream": True,
            "stream_options": {"include_usage": True}}
    async with c.stream("POST", base + "/v1/completions", json=body) as r:
        if r.status_code != 200:
            return r.status_code, json.loads(await r.aread()), r.headers.get("retry-after")
        usage = None
        async for line in r.aiter_lines():
            if line.startswith("data: {"):
                d = json.loads(line[6:])
                usage = d.get("usage") or usage
        return 200, usage, None


def _refused_total(base: str) -> float:
    for line in httpx.get(base + "/metrics").text.splitlines():
        if line.startswith('seallm:num_requests_refused_total{model="llama"}'):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError("no refusal counter")


def test_full_queue_refuses_with_429_and_loses_nothing(limited):
    before = _refused_total(limited)

    async def main():
        async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=100)) as c:
            return await asyncio.gather(*[_stream(c, limited, i) for i in range(40)])

    res = asyncio.run(main())
    ok = [r for r in res if r[0] == 200]
    refused = [r for r in res if r[0] == 429]
    assert len(ok) + len(refused) == 40, [r[0] for r in res]  # nothing else, nothing lost
    assert refused and ok
    assert all(u["completion_tokens"] == 24 for _, u, _ in ok)
    for _, body, retry in refused:
        assert body["error"]["type"] == "RateLimitError" and "max_waiting_requests" in body["error"]["message"]
        assert retry is not None and int(retry) >= 1
    assert _refused_total(limited) - before == len(refused)
    deadline = time.time() + 20
    while any(kv_pages_used(limited).values()) and time.time() < deadline:
        time.sleep(0.2)
    assert not any(kv_pages_used(limited).values())


def test_body_limit_413_declared_and_chunked(limited):
    big = {"model": "llama", "prompt": "a" * 70_000, "max_tokens": 1}
    r = httpx.post(limited + "/v1/completions", json=big)
    assert r.status_code == 413 and r.json()["error"]["code"] == 413

    def chunks():
        data = json.dumps(big).encode()
        for i in range(0, len(data), 8192):
            yield data[i:i + 8192]

    r = httpx.post(limited + "/v1/completions", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    r = httpx.post(limited + "/v1/completions", json={"model": "llama", "prompt": "hi", "max_tokens": 2})
    assert r.status_code == 200


def test_sequences_per_request_cap(limited):
    r = httpx.post(limited + "/v1/completions", json={"model": "llama", "prompt": ["a"] * 5, "n": 2, "max_tokens": 1})
    assert r.status_code == 400 and "max_sequences_per_request" in r.json()["error"]["message"]


def test_request_chat_template_renders_in_a_time_limited_process(limited):
    chat = {"model": "qwen2", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 3}
    ok = httpx.post(limited + "/v1/chat/completions", timeout=120, json=dict(
        chat, chat_template_kwargs={"chat_template": "{% for m in messages %}{{ m.content }}{% endfor %}"}))
    assert ok.status_code == 200, ok.text
    assert ok.json()["usage"]["prompt_tokens"] >= 1

    async def main():
        async with httpx.AsyncClient(timeout=120) as c:
            slow = asyncio.ensure_future(c.post(limited + "/v1/chat/completions",
                                                json=dict(chat, chat_template_kwargs={"chat_template": LOOP_TEMPLATE})))
            await asyncio.sleep(0.2)
            # The event loop is free while the template runs: a bystander completes first.
            other = await c.post(limited + "/v1/completions", json={"model": "llama", "prompt": "hi", "max_tokens": 2})
            assert not slow.done()
            return other, await slow

    other, slow = asyncio.run(main())
    assert other.status_code == 200
    assert slow.status_code == 400 and "did not finish within 1 s" in slow.json()["error"]["message"]
    again = httpx.post(limited + "/v1/chat/completions", timeout=120, json=dict(
        chat, chat_template_kwargs={"chat_template": "{{ messages[0].content }}"}))
    assert again.status_code == 200, again.text  # a new template process took over


@pytest.mark.parametrize("kwargs", [{"tokenize": False}, {"return_dict": True}, {"return_tensors": "pt"},
                                    {"padding": "max_length", "max_length": 10**6}, {"continue_final_message": 3}])
def test_reserved_template_kwargs_refused(limited, kwargs):
    r = httpx.post(limited + "/v1/chat/completions", json={
        "model": "qwen2", "messages": [{"role": "user", "content": "x"}], "max_tokens": 2,
        "chat_template_kwargs": kwargs})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "chat_template_kwargs"
