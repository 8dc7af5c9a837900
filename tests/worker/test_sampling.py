"""Sampling through the offline API: seeds, filters, stop strings, logprobs."""

from __future__ import annotations

import math

import pytest
import torch

from seallm import LLM, SamplingParams
from seallm.worker.sampler import Sampler
from tests.conftest import random_prompts


@pytest.fixture(scope="module")
def llm(checkpoints):
    return LLM(models={"a": checkpoints["llama"], "b": checkpoints["qwen2"]}, kv_cache_memory="16MiB",
               max_num_batched_tokens=64)


def test_same_seed_same_tokens_whatever_the_batch(llm):
    target = random_prompts(1, [9], seed=3)[0]
    p = SamplingParams(max_tokens=16, temperature=0.9, top_p=0.95, seed=42, ignore_eos=True)
    alone = llm.generate([target], p, model="a")[0].token_ids
    others = random_prompts(6, [4, 30, 17], seed=4)
    mixed = llm.generate(others[:3] + [target] + others[3:],
                         [SamplingParams(max_tokens=20, temperature=1.0, ignore_eos=True)] * 3 + [p]
                         + [SamplingParams(max_tokens=5, temperature=0.0, ignore_eos=True)] * 3,
                         model=["b", "a", "a", "a", "b", "a", "b"])
    assert mixed[3].token_ids == alone
    other_seed = llm.generate([target], SamplingParams(max_tokens=16, temperature=0.9, top_p=0.95, seed=43,
                                                       ignore_eos=True), model="a")[0].token_ids
    assert other_seed != alone  # the seed matters (16 tokens from ~500: a tie is ~impossible)


def test_top_k_1_is_greedy(llm):
    prompts = random_prompts(3, [5, 11, 2], seed=9)
    g = llm.generate(prompts, SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True), model="b")
    k = llm.generate(prompts, SamplingParams(max_tokens=8, temperature=1.5, top_k=1, ignore_eos=True), model="b")
    assert [o.token_ids for o in g] == [o.token_ids for o in k]


def test_stop_string_cuts_text_exactly(llm):
    full = llm.generate(["Hello there"], SamplingParams(max_tokens=24, temperature=0, ignore_eos=True),
                        model="a")[0]
    assert len(full.text) >= 8, full.text
    stop = full.text[4:7]
    cut = llm.generate(["Hello there"], SamplingParams(max_tokens=24, temperature=0, ignore_eos=True, stop=[stop]),
                       model="a")[0]
    assert cut.finish_reason == "stop" and cut.stop_reason == stop
    assert cut.text == full.text[: full.text.index(stop)]
    assert cut.token_ids == full.token_ids[: len(cut.token_ids)]
    kept = llm.generate(["Hello there"], SamplingParams(max_tokens=24, temperature=0, ignore_eos=True, stop=[stop],
                                                         include_stop_str_in_output=True), model="a")[0]
    assert kept.text == full.text[: full.text.index(stop) + len(stop)]
    assert llm.kv.pool.num_used == 0


def test_stop_token_ids_and_eos(llm):
    full = llm.generate([[5, 6, 7]], SamplingParams(max_tokens=10, temperature=0, ignore_eos=True), model="a")[0]
    stop_tok = full.token_ids[3]
    first = full.token_ids.index(stop_tok)
    out = llm.generate([[5, 6, 7]], SamplingParams(max_tokens=10, temperature=0, stop_token_ids=[stop_tok]),
                       model="a")[0]
    assert out.token_ids == full.token_ids[: first + 1]
    assert out.finish_reason == "stop" and out.stop_reason == stop_tok


def test_logprobs_are_normalized_and_ranked(llm):
    out = llm.generate([[9, 8, 7]], SamplingParams(max_tokens=5, temperature=0, logprobs=4, ignore_eos=True),
                       model="b")[0]
    assert len(out.logprobs) == 5
    for tok, (lp, top) in zip(out.token_ids, out.logprobs):
        assert len(top) == 4
        assert top[0][0] == tok  # greedy picks the most likely token
        assert math.isclose(top[0][1], lp, rel_tol=1e-6)
        assert [b for _, b in top] == sorted((b for _, b in top), reverse=True)
        assert lp <= 0


def test_sampler_filters_unit():
    s = Sampler()
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    seen = set()
    for i in range(200):
        seen.add(s.sample(logits, [f"r{i}"], [SamplingParams(top_p=0.7, seed=i)])[0].token_id)
    assert seen == {0, 1}  # 0.5 + 0.3 reaches 0.7: tokens 2 and 3 are cut
    seen = {s.sample(logits, [f"k{i}"], [SamplingParams(top_k=3, seed=i)])[0].token_id for i in range(300)}
    assert seen == {0, 1, 2}
    seen = {s.sample(logits, [f"m{i}"], [SamplingParams(min_p=0.5, seed=i)])[0].token_id for i in range(200)}
    assert seen == {0, 1}  # 0.15 < 0.5 * 0.5


def test_sampling_params_validation():
    for bad in (dict(max_tokens=0), dict(temperature=-0.1), dict(top_p=0.0), dict(top_p=1.1), dict(min_p=2.0),
                dict(top_k=-2), dict(logprobs=-1), dict(stop=[""])):
        with pytest.raises(ValueError):
            SamplingParams(**bad)


def test_generate_errors(llm):
    with pytest.raises(ValueError, match="unknown model"):
        llm.generate(["x"], model="zzz")
    with pytest.raises(ValueError, match="several models"):
        llm.generate(["x"])
    with pytest.raises(ValueError, match="empty"):
        llm.generate([[]], model="a")
    with pytest.raises(ValueError, match="vocabulary"):
        llm.generate([[1, 10**6]], model="a")
    with pytest.raises(ValueError, match="entries"):
        llm.generate(["x", "y"], model=["a"])
    with pytest.raises(ValueError, match="context"):
        llm.generate([[5] * 1024], model="a")
    assert llm.kv.pool.num_used == 0
