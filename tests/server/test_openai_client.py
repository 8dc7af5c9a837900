"""The official openai client against a live seallm server."""

from __future__ import annotations

import pytest


def test_models_listed(client):
    ids = {m.id for m in client.models.list().data}
    assert ids == {"llama", "qwen2"}


def test_completion_text_prompt(client):
    r = client.completions.create(model="llama", prompt="Hello there", max_tokens=7,
                                  extra_body={"ignore_eos": True})
    assert r.object == "text_completion"
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 7
    assert r.usage.prompt_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + 7
    assert isinstance(r.choices[0].text, str)


def test_completion_stream_sends_one_chunk_per_token(client):
    # Random weights produce many byte tokens that do not complete a UTF-8 character: their
    # chunks carry empty text but still arrive, one per token, as vLLM streams them.
    for prompt in ([7, 8, 9], [300, 301], "Hi"):
        kw = dict(model="qwen2", prompt=prompt, max_tokens=9, temperature=0, extra_body={"ignore_eos": True})
        chunks = [c for c in client.completions.create(stream=True, **kw) if c.choices]
        assert len(chunks) == 9
        assert chunks[-1].choices[0].finish_reason == "length"
        assert "".join(c.choices[0].text for c in chunks) == client.completions.create(**kw).choices[0].text


def test_completion_batch_of_prompts_and_token_ids(client):
    r = client.completions.create(model="qwen2", prompt=["one", "two two", "three"], max_tokens=3,
                                  extra_body={"ignore_eos": True})
    assert sorted(c.index for c in r.choices) == [0, 1, 2]
    assert r.usage.completion_tokens == 9
    r2 = client.completions.create(model="qwen2", prompt=[5, 6, 7, 8], max_tokens=4, temperature=0,
                                   extra_body={"ignore_eos": True})
    assert r2.usage.prompt_tokens == 4 and r2.usage.completion_tokens == 4


def test_greedy_is_deterministic_and_seed_reproducible(client):
    kw = dict(model="llama", prompt="The quick brown fox", max_tokens=12, extra_body={"ignore_eos": True})
    a = client.completions.create(temperature=0, **kw).choices[0].text
    b = client.completions.create(temperature=0, **kw).choices[0].text
    assert a == b
    s1 = client.completions.create(temperature=1.0, seed=1234, **kw).choices[0].text
    s2 = client.completions.create(temperature=1.0, seed=1234, **kw).choices[0].text
    assert s1 == s2


def test_n_and_logprobs(client):
    r = client.completions.create(model="llama", prompt="abc", max_tokens=4, n=2, logprobs=3, seed=5,
                                  extra_body={"ignore_eos": True})
    assert len(r.choices) == 2
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == 4 and len(lp.token_logprobs) == 4 and len(lp.top_logprobs) == 4
    assert all(len(t) <= 3 for t in lp.top_logprobs)
    assert all(x <= 0 for x in lp.token_logprobs)


def test_chat_completion(client):
    r = client.chat.completions.create(model="qwen2", messages=[{"role": "user", "content": "Hi!"}], max_tokens=5,
                                       extra_body={"ignore_eos": True}, logprobs=True, top_logprobs=2)
    assert r.object == "chat.completion"
    assert r.choices[0].message.role == "assistant"
    assert r.usage.completion_tokens == 5
    assert len(r.choices[0].logprobs.content) == 5


def test_chat_streaming_with_usage(client):
    stream = client.chat.completions.create(model="llama", messages=[{"role": "user", "content": "stream please"}],
                                            max_completion_tokens=6, stream=True,
                                            stream_options={"include_usage": True}, extra_body={"ignore_eos": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals and finals[-1].choices[0].finish_reason == "length"
    assert chunks[-1].usage.completion_tokens == 6 and chunks[-1].choices == []


def test_completion_streaming_text_matches_non_streaming(client):
    kw = dict(model="qwen2", prompt="Serving many models", max_tokens=10, temperature=0,
              extra_body={"ignore_eos": True})
    full = client.completions.create(**kw).choices[0].text
    streamed = "".join(c.choices[0].text for c in client.completions.create(stream=True, **kw) if c.choices)
    assert streamed == full


def test_stop_string_cuts_text(client):
    kw = dict(model="llama", prompt="Hello", max_tokens=20, temperature=0, extra_body={"ignore_eos": True})
    full = client.completions.create(**kw).choices[0].text
    if len(full) < 6:
        pytest.skip("the random model produced too little text to pick a stop string")
    stop = full[3:5]
    cut = client.completions.create(stop=[stop], **kw).choices[0]
    assert cut.finish_reason == "stop"
    assert cut.text == full[: full.index(stop)]
    streamed = "".join(c.choices[0].text for c in client.completions.create(stop=[stop], stream=True, **kw)
                       if c.choices)
    assert streamed == cut.text


def test_two_models_at_once(client):
    from concurrent.futures import ThreadPoolExecutor

    def one(i):
        m = "llama" if i % 2 else "qwen2"
        r = client.completions.create(model=m, prompt=f"request {i}", max_tokens=5, extra_body={"ignore_eos": True})
        return r.model, r.usage.completion_tokens

    with ThreadPoolExecutor(8) as ex:
        res = list(ex.map(one, range(16)))
    assert {m for m, _ in res} == {"llama", "qwen2"}
    assert all(n == 5 for _, n in res)


def test_two_models_decode_side_by_side_and_metrics_count_it(server, client):
    """With two CPU threads the default ``concurrent_models: auto`` runs the two models'
    decode iterations at the same time; /metrics counts them per model."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    import httpx
    import torch

    if torch.get_num_threads() < 2:
        pytest.skip("needs two intra-op threads")

    def one(i):
        m = "llama" if i % 2 else "qwen2"
        return client.completions.create(model=m, prompt=f"side {i}", max_tokens=24,
                                         extra_body={"ignore_eos": True}).usage.completion_tokens

    with ThreadPoolExecutor(8) as ex:
        assert list(ex.map(one, range(8))) == [24] * 8
    deadline = time.time() + 10
    while True:
        counts = {}
        for line in httpx.get(server + "/metrics").text.splitlines():
            if line.startswith("seallm:num_concurrent_iterations_total{"):
                counts[line.split('model="')[1].split('"')[0]] = float(line.rsplit(" ", 1)[1])
        if (counts.get("llama", 0) > 0 and counts.get("qwen2", 0) > 0) or time.time() > deadline:
            break
        time.sleep(0.3)
    assert counts["llama"] > 0 and counts["qwen2"] > 0, counts


def test_health_version_metrics(server):
    import httpx

    assert httpx.get(server + "/health").status_code == 200
    assert httpx.get(server + "/version").json()["version"]
    text = httpx.get(server + "/metrics").text
    for name in ("seallm:time_to_first_token_seconds", "seallm:time_per_output_token_seconds",
                 "seallm:e2e_request_latency_seconds", "seallm:request_queue_time_seconds",
                 "seallm:num_requests_running", "seallm:num_requests_waiting", "seallm:kv_cache_pages_used"):
        assert name in text
    assert 'model="llama"' in text and 'model="qwen2"' in text


def test_priority_and_slo_are_accepted(client):
    r = client.completions.create(model="llama", prompt="x", max_tokens=3,
                                  extra_body={"priority": -5, "slo": {"ttft": 1.0, "e2e": 5.0}, "ignore_eos": True})
    assert r.usage.completion_tokens == 3
