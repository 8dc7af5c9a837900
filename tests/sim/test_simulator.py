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
    big = run_simulation(SimConfig(MODELS, 2, PAGE), [BenchRequest("a", 0.0, 100, 4), BenchRequest("a", 0.0, 10, 4)])
    first, second = big.device.records
    assert not first.ok and "whole pool" in first.error and first.error.startswith("HTTP 400")
    assert second.ok and second.tokens_out == 4  # the refused request failed alone


def test_models_loaded_on_demand_cost_their_load_time():
    # Two models, one resident at a time; each load reads 1 GB at 1 GB/s from disk the
    # first time and at 10 GB/s from the host weight cache after that.
    models = tuple(SimModel(n, SPEC, COST, weights_bytes=10**9) for n in ("a", "b"))
    reqs = [BenchRequest("a", 0.0, 10, 3), BenchRequest("b", 5.0, 10, 3), BenchRequest("a", 10.0, 10, 3)]
    kw = dict(max_resident_models=1, disk_bandwidth=1e9, host_cache_bandwidth=1e10)
    res = simulate_device(reqs, models, make_policy("fcfs"), 64, PAGE, **kw)
    alone = simulate_device(reqs, models, make_policy("fcfs"), 64, PAGE)
    ttft = [r.ttft_s for r in res.records]
    base = [r.ttft_s for r in alone.records]
    assert res.num_loads == 2 and alone.num_loads == 0  # b cold from disk, then a back from the cache
    assert ttft[0] == pytest.approx(base[0])  # a was resident from the start
    assert ttft[1] == pytest.approx(base[1] + 1.0)
    assert ttft[2] == pytest.approx(base[2] + 0.1)
    assert all(r.ok and r.tokens_out == 3 for r in res.records)


def test_prompts_over_the_context_length_fail_alone():
    models = (SimModel("a", SPEC, COST, max_model_len=50),)
    res = simulate_device([BenchRequest("a", 0.0, 60, 3), BenchRequest("a", 0.0, 20, 3)], models,
                          make_policy("seallm"), 64, PAGE)
    assert "maximum context length" in res.records[0].error and res.records[1].ok


def test_ingest_delay_shifts_every_request_but_not_its_send_time():
    reqs = [BenchRequest("a", 0.1 * i, 20, 5) for i in range(5)]
    base = simulate_device(reqs, MODELS, make_policy("fcfs"), 64, PAGE)
    late = simulate_device(reqs, MODELS, make_policy("fcfs"), 64, PAGE, ingest_delay_s={"a": 0.5})
    for a, b in zip(base.records, late.records):
        assert b.sent_s == a.sent_s
        assert b.first_token_s == pytest.approx(a.first_token_s + 0.5)
        assert b.finish_s - b.sent_s == pytest.approx(a.finish_s - a.sent_s + 0.5)
