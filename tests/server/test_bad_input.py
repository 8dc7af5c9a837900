"""Every bad input gets a 4xx with an OpenAI-style error body, and the server keeps serving."""

from __future__ import annotations

import httpx
import pytest

GOOD = {"model": "llama", "prompt": "hi", "max_tokens": 2}

CASES = [
    ("malformed json", "/v1/completions", b'{"model": "llama", "prompt": ', 400),
    ("body not an object", "/v1/completions", [1, 2], 400),
    ("wrong type max_tokens", "/v1/completions", dict(GOOD, max_tokens="five"), 400),
    ("wrong type prompt", "/v1/completions", dict(GOOD, prompt={"a": 1}), 400),
    ("wrong type temperature", "/v1/completions", dict(GOOD, temperature="hot"), 400),
    ("unknown model", "/v1/completions", dict(GOOD, model="gpt-17"), 404),
    ("unknown model chat", "/v1/chat/completions",
     {"model": "nope", "messages": [{"role": "user", "content": "x"}]}, 404),
    ("negative max_tokens", "/v1/completions", dict(GOOD, max_tokens=-3), 400),
    ("zero max_tokens", "/v1/completions", dict(GOOD, max_tokens=0), 400),
    ("huge max_tokens", "/v1/completions", dict(GOOD, max_tokens=10**9), 400),
    ("prompt longer than context", "/v1/completions", dict(GOOD, prompt=[5] * 1500), 400),
    ("empty prompt", "/v1/completions", dict(GOOD, prompt=""), 400),
    ("empty token list", "/v1/completions", dict(GOOD, prompt=[]), 400),
    ("token id out of vocabulary", "/v1/completions", dict(GOOD, prompt=[1, 99999]), 400),
    ("unknown field", "/v1/completions", dict(GOOD, frobnicate=True), 400),
    ("unknown field chat", "/v1/chat/completions",
     {"model": "llama", "messages": [{"role": "user", "content": "x"}], "frobnicate": 1}, 400),
    ("empty messages", "/v1/chat/completions", {"model": "llama", "messages": []}, 400),
    ("top_p out of range", "/v1/completions", dict(GOOD, top_p=1.5), 400),
    ("negative temperature", "/v1/completions", dict(GOOD, temperature=-1), 400),
    ("n too large", "/v1/completions", dict(GOOD, n=1000), 400),
    ("logprobs too large", "/v1/completions", dict(GOOD, logprobs=100), 400),
    ("echo unsupported", "/v1/completions", dict(GOOD, echo=True), 400),
    ("missing model", "/v1/completions", {"prompt": "x"}, 400),
    ("unknown slo_class", "/v1/completions", dict(GOOD, slo_class="gold"), 400),
    ("negative slo", "/v1/completions", dict(GOOD, slo={"e2e": -1}), 400),
    ("slo and slo_class", "/v1/completions", dict(GOOD, slo={"e2e": 1}, slo_class="x"), 400),
    ("wrong type priority", "/v1/completions", dict(GOOD, priority="high"), 400),
]


@pytest.mark.parametrize("name,path,body,status", CASES, ids=[c[0] for c in CASES])
def test_bad_input(server, name, path, body, status):
    if isinstance(body, bytes):
        r = httpx.post(server + path, content=body, headers={"content-type": "application/json"})
    else:
        r = httpx.post(server + path, json=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert isinstance(err["message"], str) and err["message"]
    assert err["type"] and err["code"] in (status, "model_not_found")
    # The server still answers everyone else.
    ok = httpx.post(server + "/v1/completions", json=GOOD, timeout=60)
    assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] >= 1


def test_unknown_route_is_404_in_openai_format(server):
    r = httpx.get(server + "/v1/nothing-here")
    assert r.status_code == 404 and "error" in r.json()


def test_context_error_names_the_limit(server):
    r = httpx.post(server + "/v1/completions", json=dict(GOOD, max_tokens=5000))
    assert r.status_code == 400
    assert "1024" in r.json()["error"]["message"]  # the tiny models' context length
