"""The device simulator: real scheduler and policies, cost-model time (torch-free)."""

from __future__ import annotations

import pytest

from seallm.bench.workload import BenchRequest
from seallm.cost import BatchShape, MaxAffineCostModel
from seallm.kv import KVSpec
from seallm.sched import SchedulerConfig, make_policy
from seallm.sim import SimModel, simulate_device
from seallm.sim.runner import SimConfig, run_simulation, simulated_alone_latency

SPEC = KVSpec(num_layers=2, num_kv_heads=2, head_dim=8, dtype_bytes=4)  # 256 B/token
PAGE = 256 * 16
# 1 ms per iteration + 0.1 ms per batch token.
COST = MaxAffineCostModel(((1e-4, 0.0, 1e-3),))
MODELS = (SimModel("a", SPEC, COST), SimModel("b", SPEC, COST))


def test_one_request_alone_takes_exactly_its_steps():
    reqs = [BenchRequest("a", 0.5, 100, 5)]
    res = simulate_device(reqs, MODELS, make_policy("fcfs"), 64, PAGE, SchedulerConfig(max_num_batched_tokens=64))
    r = res.records[0]
    prefill = COST.step_time(BatchShape(64, 64)) + COST.step_time(BatchShape(36, 100))  # two chunks
    decode = COST.step_time(BatchShape(1, 101))
    assert r.first_token_s == pytest.approx(0.5 + prefill)
    assert r.finish_s == pytest.approx(0.5 + prefill + 4 * decode)
    assert r.tokens_out == 5 and len(r.token_times_s) == 5
    assert res.num_steps == 6 and res.busy_s == pytest.approx(prefill + 4 * decode)


def test_idle_gaps_are_skipped_and_every_request_completes():
    reqs = [BenchRequest("a" if i % 2 else "b", 10.0 * i, 20, 3) for i in range(5)]
    res = simulate_device(reqs, MODELS, make_policy("seallm"), 64, PAGE)
    assert [r.index for r in res.records] == list(range(5))
    assert all(r.ok and r.tokens_out == 3 for r in res.records)
    assert res.makespan_s == pytest.approx(40.0 + res.records[-1].e2e_s)


def test_head_of_line_blocking_fcfs_vs_seallm():
    # Two long requests fill the seats; a short one arrives behind them.
    reqs = [BenchRequest("a", 0.0, 10, 300), BenchRequest("a", 0.0, 10, 300), BenchRequest("a", 0.05, 10, 4)]
    cfg = SchedulerConfig(max_num_batched_tokens=64, max_num_seqs=2)
    short = {}
    for pol in ("fcfs", "seallm"):
        res = simulate_device(reqs, MODELS, make_policy(pol), 64, PAGE, cfg)
        short[pol] = res.records[2].e2e_s
    assert short["seallm"] < 0.05 < short["fcfs"]


def test_swap_copies_cost_time_and_lose_nothing():
    reqs = [BenchRequest("a", 0.01 * i, 40, 60) for i in range(4)]
    kw = dict(scheduler_config=SchedulerConfig(64, 8, "swap"), swap_pages=64)
    slow = simulate_device(reqs, MODELS, make_policy("fcfs"), 12, PAGE, swap_bandwidth=1e6, **kw)
    fast = simulate_device(reqs, MODELS, make_policy("fcfs"), 12, PAGE, swap_bandwidth=1e12, **kw)
    assert slow.num_swap_outs > 0 and slow.num_swap_outs == slow.num_preemptions
    assert all(r.tokens_out == 60 for r in slow.records)
    assert slow.busy_s > fast.busy_s + slow.num_swap_outs * PAGE / 1e6 * 0.99


def test_run_simulation_metrics_and_errors():
    cfg = SimConfig(MODELS, 64, PAGE, "seallm", slo_scales=(5.0,))
    reqs = [BenchRequest("a", 0.1 * i, 30 + i, 4 + i) for i in range(10)]
    alone = simulated_alone_latency(cfg, reqs)
    assert alone["a"].tpot_s == pytest.approx(COST.step_time(BatchShape(1, 40)), rel=0.05)
    res = run_simulation(cfg, reqs)
    assert res.metrics.overall.num_completed == 10 and res.metrics.overall.slo_attainment[5.0] > 0.5
    with pytest.raises(ValueError, match="does not serve"):
        run_simulation(cfg, [BenchRequest("zzz", 0.0, 4, 4)])
    with pytest.raises(ValueError, match="whole pool"):
        run_simulation(SimConfig(MODELS, 2, PAGE), [BenchRequest("a", 0.0, 100, 4)])
