"""Models loaded and unloaded at run time with real weights (offline ``LLM``, CPU)."""

from __future__ import annotations

import pytest

from seallm import LLM, SamplingParams
from tests.conftest import random_prompts

GREEDY = SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True)


def _tokens(outs):
    return [o.token_ids for o in outs]


@pytest.fixture(scope="module")
def reference(checkpoints):
    """Greedy outputs of every model with all of them resident."""
    llm = LLM({a: p for a, p in checkpoints.items()}, kv_cache_memory="16MiB")
    prompts = random_prompts(3, [5, 17, 33], seed=4)
    return prompts, {a: _tokens(llm.generate(prompts, GREEDY, model=a)) for a in checkpoints}


@pytest.mark.parametrize("cache", ["64MiB", 0], ids=["host_cache", "disk"])
def test_unload_and_reload_gives_identical_greedy_outputs(checkpoints, reference, cache):
    prompts, ref = reference
    llm = LLM({"llama": checkpoints["llama"], "qwen3": checkpoints["qwen3"]}, kv_cache_memory="16MiB",
              max_resident_models=1, host_weight_cache=cache)
    assert llm.resident_models == ["llama"]
    assert _tokens(llm.generate(prompts, GREEDY, model="llama")) == ref["llama"]
    llm.unload_model("llama")
    assert llm.resident_models == []
    llm.load_model("llama")
    assert _tokens(llm.generate(prompts, GREEDY, model="llama")) == ref["llama"]
    # A prompt for the other model evicts llama and loads qwen3 on demand.
    assert _tokens(llm.generate(prompts, GREEDY, model="qwen3")) == ref["qwen3"]
    assert llm.resident_models == ["qwen3"]
    assert _tokens(llm.generate(prompts, GREEDY, model="llama")) == ref["llama"]
    cache_holds = llm.core.executor.loader.cache
    assert ("qwen3" in cache_holds) == (cache != 0) and "llama" not in cache_holds  # llama is resident
    llm.kv.check_integrity()
    assert llm.kv.pool.num_used == 0


def test_mixed_batch_over_four_models_with_two_resident(checkpoints, reference):
    prompts, ref = reference
    llm = LLM(dict(checkpoints), kv_cache_memory="16MiB", max_resident_models=2, pinned=["mistral"])
    names = list(checkpoints)
    batch = [p for p in prompts for _ in names]
    models = [n for _ in prompts for n in names]
    outs = llm.generate(batch, GREEDY, model=models)
    for i, o in enumerate(outs):
        assert o.token_ids == ref[models[i]][i // len(names)], models[i]
    assert len(llm.resident_models) == 2 and "mistral" in llm.resident_models
    with pytest.raises(ValueError, match="pinned"):
        llm.unload_model("mistral")
    llm.scheduler.check_integrity()
    assert llm.kv.pool.num_used == 0


def test_reload_source_is_host_cache_then_disk_without_cache(checkpoints):
    for cache, source in (("64MiB", "host_cache"), (0, "disk")):
        llm = LLM({"a": checkpoints["llama"], "b": checkpoints["qwen2"]}, kv_cache_memory="16MiB",
                  max_resident_models=1, host_weight_cache=cache)
        events = []
        orig = llm.core.executor.poll_loads

        def spy():
            evs = orig()
            events.extend(evs)
            return evs

        llm.core.executor.poll_loads = spy
        llm.load_model("b")  # first load of b: from disk
        llm.load_model("a")  # a was unloaded a moment ago
        assert [(e.model, e.source) for e in events] == [("b", "disk"), ("a", source)]
        assert all(e.seconds > 0 and e.weights_bytes > 0 for e in events)
