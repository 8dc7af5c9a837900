"""Greedy parity with transformers, token for token, for every supported architecture."""

from __future__ import annotations

import pytest

from seallm import LLM, SamplingParams
from tests.conftest import hf_greedy, random_prompts

ARCHS = ["llama", "qwen2", "qwen3", "mistral"]
LENGTHS = [5, 37, 1, 90, 12]
MAX_NEW = 24


@pytest.fixture(scope="module")
def references(checkpoints):
    prompts = random_prompts(5, LENGTHS, seed=7)
    return prompts, {a: hf_greedy(checkpoints[a], prompts, MAX_NEW) for a in ARCHS}


def _greedy(n=MAX_NEW):
    return SamplingParams(max_tokens=n, temperature=0.0, ignore_eos=True)


@pytest.mark.parametrize("arch", ARCHS)
def test_batch_parity(checkpoints, references, arch):
    prompts, ref = references
    llm = LLM(models={arch: checkpoints[arch]}, kv_cache_memory="8MiB")
    outs = llm.generate(prompts, _greedy(), model=arch)
    assert [o.token_ids for o in outs] == ref[arch]
    assert all(o.finish_reason == "length" for o in outs)
    llm.kv.check_integrity()
    assert llm.kv.pool.num_used == 0


@pytest.mark.parametrize("arch", ARCHS)
def test_tiny_token_budget_many_chunks(checkpoints, references, arch):
    prompts, ref = references
    llm = LLM(models={arch: checkpoints[arch]}, kv_cache_memory="8MiB", max_num_batched_tokens=5)
    outs = llm.generate(prompts, _greedy(), model=arch)
    assert [o.token_ids for o in outs] == ref[arch]
    # 5 prompts of up to 90 tokens with 5 tokens per step: prefill alone needs > 29 steps.
    assert llm.core.num_steps > sum(LENGTHS) // 5


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_preemption_by_recompute(checkpoints, references, arch):
    prompts, ref = references
    # Pages of 16 tokens and room for 10 pages: far fewer than 5 requests of up to 114 tokens.
    from seallm.models.config import load_model_config

    spec = load_model_config(checkpoints[arch]).kv_spec
    page = spec.bytes_per_token * 16
    llm = LLM(models={arch: checkpoints[arch]}, kv_cache_memory=page * 10, page_size_bytes=page,
              preemption_mode="recompute")
    outs = llm.generate(prompts, _greedy(), model=arch)
    assert [o.token_ids for o in outs] == ref[arch]
    assert llm.scheduler.num_preemptions > 0 and llm.scheduler.num_swap_outs == 0
    assert sum(o.metrics.num_preemptions for o in outs) == llm.scheduler.num_preemptions
    llm.kv.check_integrity()
    assert llm.kv.pool.num_used == 0


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_preemption_by_swap(checkpoints, references, arch):
    prompts, ref = references
    from seallm.models.config import load_model_config

    spec = load_model_config(checkpoints[arch]).kv_spec
    page = spec.bytes_per_token * 16
    llm = LLM(models={arch: checkpoints[arch]}, kv_cache_memory=page * 10, page_size_bytes=page,
              preemption_mode="swap", swap_space=page * 64)
    outs = llm.generate(prompts, _greedy(), model=arch)
    assert [o.token_ids for o in outs] == ref[arch]
    sched = llm.scheduler
    assert sched.num_swap_outs > 0 and sched.num_preemptions == sched.num_swap_outs  # KV copied, not recomputed
    llm.kv.check_integrity()
    assert llm.kv.pool.num_used == 0 and llm.kv.host_pool.num_used == 0


def test_two_architectures_interleaved_on_one_pool(checkpoints, references):
    prompts, ref = references
    llm = LLM(models={"a": checkpoints["llama"], "b": checkpoints["qwen3"]}, kv_cache_memory="8MiB",
              max_num_batched_tokens=16)
    names = ["a", "b", "a", "b", "b"]
    outs = llm.generate(prompts, _greedy(), model=names)
    for o, name, i in zip(outs, names, range(5)):
        arch = "llama" if name == "a" else "qwen3"
        assert o.model == name
        assert o.token_ids == ref[arch][i]
    # Different KV shapes, one pool: tokens per page differ per model.
    assert llm.kv.tokens_per_page("a") != llm.kv.tokens_per_page("b")
    llm.kv.check_integrity()


def test_two_architectures_with_preemption(checkpoints, references):
    prompts, ref = references
    from seallm.models.config import load_model_config

    a = load_model_config(checkpoints["qwen2"]).kv_spec
    b = load_model_config(checkpoints["mistral"]).kv_spec
    page = max(a.bytes_per_token, b.bytes_per_token) * 16
    llm = LLM(models={"a": checkpoints["qwen2"], "b": checkpoints["mistral"]}, kv_cache_memory=page * 12,
              page_size_bytes=page, max_num_batched_tokens=32)
    names = ["a", "b", "b", "a", "b"]
    outs = llm.generate(prompts, _greedy(), model=names)
    for o, name, i in zip(outs, names, range(5)):
        assert o.token_ids == ref["qwen2" if name == "a" else "mistral"][i]
    assert llm.scheduler.num_preemptions > 0
    llm.kv.check_integrity()
    assert llm.kv.pages_used_by_model() == {"a": 0, "b": 0}


@pytest.mark.parametrize("mode", ["recompute", "swap"])
def test_seallm_policy_preemption_keeps_greedy_parity(checkpoints, references, mode):
    prompts, ref = references
    from seallm.models.config import load_model_config

    a = load_model_config(checkpoints["llama"]).kv_spec
    b = load_model_config(checkpoints["qwen2"]).kv_spec
    page = max(a.bytes_per_token, b.bytes_per_token) * 16
    llm = LLM(models={"a": checkpoints["llama"], "b": checkpoints["qwen2"]}, kv_cache_memory=page * 9,
              page_size_bytes=page, max_num_batched_tokens=32, scheduling_policy="seallm", preemption_mode=mode,
              swap_space=page * 64)
    names = ["a", "b", "a", "b", "a"]
    outs = llm.generate(prompts, _greedy(), model=names)
    for o, name, i in zip(outs, names, range(5)):
        assert o.token_ids == ref["llama" if name == "a" else "qwen2"][i]
    assert llm.scheduler.num_preemptions > 0
    assert (llm.scheduler.num_swap_outs > 0) == (mode == "swap")
    llm.kv.check_integrity()
    assert llm.kv.pool.num_used == 0
