"""MuxServe's ADBS policy: quotas by rate x KV bytes, the quota bounds running sequences,
prefill-first round robin, and re-adaptation on its period (torch-free)."""

from __future__ import annotations

import pytest

from seallm.bench.workload import BenchRequest
from seallm.cost import MaxAffineCostModel
from seallm.kv import KVSpec
from seallm.sched import SchedulerConfig, make_policy
from seallm.sched.muxserve import ADBSConfig, ADBSPolicy
from seallm.sim import SimModel, simulate_device

SMALL = KVSpec(num_layers=2, num_kv_heads=2, head_dim=8, dtype_bytes=4)  # 256 B/token
BIG = KVSpec(num_layers=4, num_kv_heads=2, head_dim=8, dtype_bytes=4)  # 512 B/token
PAGE = 512 * 16
COST = MaxAffineCostModel(((1e-4, 0.0, 1e-3),))


def run(reqs, policy, pages=400):
    models = (SimModel("a", SMALL, COST), SimModel("b", BIG, COST))
    return simulate_device(reqs, models, policy, pages, PAGE, SchedulerConfig(256, 256))


def test_quotas_split_the_pool_by_rate_times_kv_bytes():
    pol = ADBSPolicy(ADBSConfig(rates={"a": 3.0, "b": 1.0}, avg_seq_len=64, adapt_interval_s=None))
    reqs = [BenchRequest(m, 0.01 * i, 16, 4) for i, m in enumerate("ab" * 4)]
    res = run(reqs, pol)
    assert all(r.ok for r in res.records)
    # a: 3 x 256 B, b: 1 x 512 B per token -> 60 % / 40 % of 400 pages
    assert pol.quota_pages["a"] == pytest.approx(240) and pol.quota_pages["b"] == pytest.approx(160)
    # a's sequence of 64 tokens takes 2 pages (32 tokens/page), b's 4 (16 tokens/page)
    assert pol.quota("a") == 120 and pol.quota("b") == 40


def test_quota_bounds_the_running_sequences_of_a_model():
    pol = ADBSPolicy(ADBSConfig(rates={"a": 1.0, "b": 1.0}, avg_seq_len=2000, adapt_interval_s=None))
    reqs = [BenchRequest("a", 0.0, 16, 50) for _ in range(10)]
    res = run(reqs, pol)
    q = pol.quota("a")
    assert q < 10
    assert max(h for h in pol._batches["a"]) <= q  # never more than the quota at once
    assert all(r.ok and r.tokens_out == 50 for r in res.records)  # the rest waited their turn
    fcfs = run(reqs, make_policy("fcfs"))
    assert max(r.e2e_s for r in res.records) > max(r.e2e_s for r in fcfs.records)


def test_quotas_adapt_on_their_period_toward_the_busy_model():
    pol = ADBSPolicy(ADBSConfig(rates={"a": 1.0, "b": 1.0}, avg_seq_len=1000, adapt_interval_s=8.0))
    reqs = [BenchRequest("b", 0.0, 8, 1)] + [BenchRequest("a", 0.05 * i, 16, 2000) for i in range(40)]
    run(reqs, pol, pages=800)
    assert pol.num_adaptations >= 1
    assert pol.quota_pages["a"] > pol.quota_pages["b"]  # the idle model donated to the busy one


def test_options_are_validated():
    with pytest.raises(ValueError):
        ADBSConfig(avg_seq_len=0)
    with pytest.raises(ValueError):
        ADBSConfig(rates={"a": -1.0})
    with pytest.raises(ValueError, match="invalid option"):
        make_policy("muxserve", {"bogus": 1})
    assert isinstance(make_policy("muxserve", {"rates": {"a": 2.0}}), ADBSPolicy)
