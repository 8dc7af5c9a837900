"""One replica spec, one builder: pool sizing and scheduler assembly in one place, the same
for the offline LLM, the server's engine and the simulator."""

from __future__ import annotations

import pytest

from seallm.cli import build_parser
from seallm.engine.replica import ReplicaModel, ReplicaSpec, build_replica
from seallm.kv import KVSpec
from seallm.sched import SchedulerConfig
from tests.sched.fakes import FakeExecutor

A = KVSpec(num_layers=2, num_kv_heads=2, head_dim=8, dtype_bytes=4)  # 256 B/token
B = KVSpec(num_layers=4, num_kv_heads=4, head_dim=16, dtype_bytes=2)  # 1024 B/token


def test_builder_sizes_the_pool_for_every_model():
    spec = ReplicaSpec((ReplicaModel("a", A), ReplicaModel("b", B)), kv_cache_bytes=1 << 20, swap_space_bytes=1 << 18,
                       scheduler=SchedulerConfig(64, 8, "swap"), scheduling_policy="fcfs")
    seen = {}

    def factory(layout):
        seen["layout"] = layout
        return FakeExecutor(dict(layout.tokens_per_page))

    rep = build_replica(spec, factory)
    lay = seen["layout"]
    assert lay.page_size_bytes == 16 * 1024  # b, the larger per-token KV, gets 16 tokens per page
    assert dict(lay.tokens_per_page) == {"a": 64, "b": 16}
    assert lay.num_pages == 64 and lay.num_host_pages == 16
    assert rep.kv.pool.num_pages == 64 and rep.kv.host_pool.num_pages == 16
    assert rep.scheduler.policy.name == "fcfs" and rep.scheduler.config.max_num_seqs == 8
    rep.scheduler.check_integrity()


def test_no_swap_space_without_swap_preemption():
    spec = ReplicaSpec((ReplicaModel("a", A),), kv_cache_bytes=1 << 16, swap_space_bytes=1 << 20,
                       scheduler=SchedulerConfig(64, 8, "recompute"))
    assert build_replica(spec, lambda lay: FakeExecutor(dict(lay.tokens_per_page))).layout.num_host_pages == 0


@pytest.mark.parametrize("kw, match", [
    (dict(models=()), "at least one model"),
    (dict(models=(ReplicaModel("a", A), ReplicaModel("a", B))), "unique"),
    (dict(kv_cache_bytes=0), "positive"),
    (dict(tensor_parallel_size=2), "tensor_parallel_size")])
def test_spec_validation(kw, match):
    base = dict(models=(ReplicaModel("a", A),), kv_cache_bytes=1 << 16)
    with pytest.raises(ValueError, match=match):
        ReplicaSpec(**(base | kw))


def test_pool_smaller_than_a_page():
    spec = ReplicaSpec((ReplicaModel("a", A),), kv_cache_bytes=100)
    with pytest.raises(ValueError, match="smaller than one page"):
        build_replica(spec, lambda lay: FakeExecutor(dict(lay.tokens_per_page)))


def test_offline_engine_and_simulator_build_the_same_replica(checkpoints):
    # The offline LLM (the server's engine uses the same build_engine) and `seallm simulate`
    # read one deployment; their pools and schedulers must agree.
    from seallm import LLM
    from seallm.simulate import sim_config_from_args

    models = {"chat": checkpoints["llama"], "code": checkpoints["qwen2"]}
    llm = LLM(models=models, kv_cache_memory="3MiB", max_num_batched_tokens=256, max_num_seqs=7,
              preemption_mode="swap", swap_space="1MiB")
    args = build_parser().parse_args(
        ["simulate", *[a for k, v in models.items() for a in ("--model", f"{k}={v}")], "--kv-cache-memory", "3MiB",
         "--max-num-batched-tokens", "256", "--max-num-seqs", "7", "--preemption-mode", "swap", "--swap-space", "1MiB",
         "--device", "a100-80gb", "--slo-scales", "5", "--models", "chat"])
    _, (sim,) = sim_config_from_args(args)
    assert (sim.kv_pages, sim.page_size_bytes, sim.swap_pages) == (
        llm.kv.pool.num_pages, llm.kv.pool.page_size_bytes, llm.kv.host_pool.num_pages)
    assert sim.scheduler == llm.scheduler.config
    assert sim.scheduling_policy == llm.scheduler.policy.name
