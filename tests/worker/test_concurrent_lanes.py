"""Two models' decode iterations at the same time on a CPU, each on its share of the
intra-op threads: the same greedy tokens as one at a time, every page back."""

from __future__ import annotations

import pytest
import torch

from seallm import LLM, SamplingParams
from tests.conftest import random_prompts


def _llm(checkpoints, concurrent_models):
    return LLM(models={"a": checkpoints["llama"], "b": checkpoints["qwen3"]}, kv_cache_memory="8MiB",
               max_num_batched_tokens=64, concurrent_models=concurrent_models)


@pytest.mark.skipif(torch.get_num_threads() < 2, reason="needs two intra-op threads")
def test_concurrent_models_give_the_serial_greedy_tokens(checkpoints):
    prompts = random_prompts(8, [5, 17, 40, 9])
    names = ["a", "b"] * 4
    params = SamplingParams(max_tokens=12, temperature=0, ignore_eos=True)
    threads = torch.get_num_threads()
    outs = {}
    for cm in (1, 2):
        llm = _llm(checkpoints, cm)
        assert llm.core.max_concurrent_plans == cm
        outs[cm] = [o.token_ids for o in llm.generate(prompts, params, model=names)]
        assert (llm.core.num_concurrent_steps > 0) == (cm == 2)
        llm.kv.check_integrity()
        assert llm.kv.pool.num_used == 0
        assert torch.get_num_threads() == threads  # the lanes' thread counts stay theirs
    assert outs[1] == outs[2]
    assert all(len(t) == 12 for t in outs[2])


def test_auto_is_capped_by_the_threads_and_one_model_runs_alone(checkpoints):
    llm = _llm(checkpoints, "auto")
    assert llm.core.max_concurrent_plans == min(2, torch.get_num_threads())
    one = LLM(models={"a": checkpoints["llama"]}, kv_cache_memory="8MiB")
    assert one.core.max_concurrent_plans == 1


def test_a_group_must_hold_distinct_models(checkpoints):
    llm = _llm(checkpoints, 2)
    ex = llm.core.executor
    if ex.max_concurrent_plans < 2:
        pytest.skip("needs two intra-op threads")
    llm.generate([[5, 6, 7]], SamplingParams(max_tokens=1), model="a")
    from seallm.core import StepPlan

    plan = StepPlan(model="a", seqs=())
    with pytest.raises(ValueError, match="distinct models"):
        ex.execute_concurrent([plan, plan])
    with pytest.raises(ValueError, match="at most 2"):
        ex.execute_concurrent([plan, StepPlan(model="b", seqs=()), StepPlan(model="c", seqs=())])


def test_bad_concurrent_models_is_refused(checkpoints):
    for bad in (0, -1, "two", True):
        with pytest.raises(ValueError, match="concurrent_models"):
            _llm(checkpoints, bad)


def test_unequal_shares_are_the_lanes_thread_counts(checkpoints):
    """Three threads for two lanes: the first plan's lane runs on two, the other on one,
    from the first group on (PyTorch applies the process-wide count to a new thread at its
    first op); the main thread keeps three."""
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        llm = _llm(checkpoints, 2)
        ex = llm.core.executor
        seen = []
        run = ex.execute

        def execute(plan):
            seen.append((plan.model, torch.get_num_threads()))
            return run(plan)

        ex.execute = execute
        prompts = random_prompts(4, [6, 9])
        llm.generate(prompts, SamplingParams(max_tokens=10, temperature=0, ignore_eos=True), model=["a", "b"] * 2)
        assert llm.core.num_concurrent_steps > 0
        counts = {n for _, n in seen}
        assert counts <= {1, 2, 3} and {1, 2} <= counts  # lanes: 2 and 1; serial iterations: 3
        assert torch.get_num_threads() == 3
        import threading

        got = []
        t = threading.Thread(target=lambda: got.append(torch.get_num_threads()))
        t.start()
        t.join()
        assert got == [3]  # a new thread starts with the configured count, not a lane's
    finally:
        torch.set_num_threads(before)
