"""Workload generation: trace windows, rate scaling, length scaling/caps, synthetic arrivals."""

from __future__ import annotations

import numpy as np
import pytest

from seallm.bench.traces import load_azure_trace, load_length_distribution
from seallm.bench.workload import (
    AzureWorkload,
    BenchRequest,
    LengthConfig,
    SyntheticWorkload,
    WorkloadError,
    arrival_times,
    azure_workload,
    build_workload,
    power_law_rates,
    synthetic_workload,
)

CODE_OFFSET_S = 77.29937  # 18:17:03.9799600 - 18:15:46.6805900


def test_window_selects_trace_rows_and_rebases_times():
    conv = load_azure_trace("conv")
    reqs = azure_workload(AzureWorkload(traces=(("chat", "A"),), window_start_s=600, duration_s=60))
    mask = (conv.arrival_s >= 600) & (conv.arrival_s < 660)
    assert len(reqs) == int(mask.sum()) > 200
    assert all(r.model == "A" for r in reqs)
    assert [r.arrival_s for r in reqs] == pytest.approx((conv.arrival_s[mask] - 600).tolist(), abs=1e-9)
    assert [r.input_len for r in reqs] == conv.input_lens[mask].tolist()
    assert [r.output_len for r in reqs] == conv.output_lens[mask].tolist()
    assert 0 <= reqs[0].arrival_s and reqs[-1].arrival_s < 60


def test_rate_scale_stretches_inter_arrival_times():
    base = azure_workload(AzureWorkload(traces=(("conv", "A"),), window_start_s=100, duration_s=30))
    half = azure_workload(AzureWorkload(traces=(("conv", "A"),), window_start_s=100, duration_s=30, rate_scale=0.5))
    double = azure_workload(AzureWorkload(traces=(("conv", "A"),), window_start_s=100, duration_s=30, rate_scale=2))
    assert len(base) == len(half) == len(double)  # the window is in trace time
    a = np.array([r.arrival_s for r in base])
    assert np.allclose([r.arrival_s for r in half], 2 * a)
    assert np.allclose([r.arrival_s for r in double], a / 2)
    # half the rate: the same requests over twice the time
    span = lambda rs: rs[-1].arrival_s - rs[0].arrival_s  # noqa: E731
    assert (len(half) - 1) / span(half) == pytest.approx(0.5 * (len(base) - 1) / span(base))


def test_two_traces_share_one_clock():
    reqs = azure_workload(AzureWorkload(traces=(("chat", "A"), ("code", "B")), duration_s=120))
    code = [r for r in reqs if r.model == "B"]
    chat = [r for r in reqs if r.model == "A"]
    assert chat[0].arrival_s == 0.0
    assert code[0].arrival_s == pytest.approx(CODE_OFFSET_S, abs=1e-6)
    assert code[0].input_len == 4808 and code[0].output_len == 10
    assert [r.arrival_s for r in reqs] == sorted(r.arrival_s for r in reqs)
    # code alone starts at its own first row
    alone = azure_workload(AzureWorkload(traces=(("code", "B"),), duration_s=1))
    assert alone[0].arrival_s == 0.0


def test_length_scale_caps_and_minimum():
    cfg = LengthConfig(scale=0.1, max_input_len=200, max_output_len=50)
    assert cfg.inputs(np.array([1, 4, 5, 15, 5000])).tolist() == [1, 1, 1, 2, 200]
    assert cfg.outputs(np.array([3, 1000])).tolist() == [1, 50]
    reqs = azure_workload(AzureWorkload(traces=(("conv", "A"),), duration_s=300,
                                        lengths=LengthConfig(max_input_len=256, max_output_len=32)))
    assert max(r.input_len for r in reqs) == 256 and max(r.output_len for r in reqs) == 32
    assert min(r.input_len for r in reqs) >= 1 and min(r.output_len for r in reqs) >= 1
    with pytest.raises(WorkloadError):
        LengthConfig(scale=0)
    with pytest.raises(WorkloadError):
        LengthConfig(max_output_len=0)


def test_num_requests_and_empty_window():
    reqs = azure_workload(AzureWorkload(traces=(("conv", "A"),), num_requests=7))
    assert len(reqs) == 7
    with pytest.raises(WorkloadError, match="no request"):
        azure_workload(AzureWorkload(traces=(("conv", "A"),), window_start_s=10_000, duration_s=10))
    with pytest.raises(WorkloadError):
        AzureWorkload(traces=(("conv", "A"),), rate_scale=0)
    with pytest.raises(WorkloadError):
        AzureWorkload(traces=())


def test_power_law_rates():
    r = power_law_rates(3, 11.0, 1.0)
    w = np.array([1, 1 / 2, 1 / 3])
    assert r.tolist() == pytest.approx((11.0 * w / w.sum()).tolist())
    assert r.sum() == pytest.approx(11.0)
    assert power_law_rates(4, 8.0, 0.0).tolist() == [2.0, 2.0, 2.0, 2.0]
    with pytest.raises(WorkloadError):
        power_law_rates(0, 1.0, 1.0)


def test_synthetic_is_deterministic_and_follows_power_law_shares():
    spec = SyntheticWorkload(models=("m0", "m1", "m2"), total_rate=50.0, duration_s=400.0, alpha=1.3)
    a = synthetic_workload(spec, seed=7)
    b = synthetic_workload(spec, seed=7)
    c = synthetic_workload(spec, seed=8)
    assert a == b
    assert a != c
    assert [r.arrival_s for r in a] == sorted(r.arrival_s for r in a)
    assert 0 < a[0].arrival_s and a[-1].arrival_s < 400.0
    n = len(a)
    assert n == pytest.approx(50 * 400, rel=0.05)
    want = power_law_rates(3, 1.0, 1.3)
    for i, m in enumerate(spec.models):
        share = sum(r.model == m for r in a) / n
        assert share == pytest.approx(want[i], abs=0.015)
    # adding a model does not change the existing models' streams
    more = synthetic_workload(SyntheticWorkload(models=("m0", "m1", "m2", "m3"), total_rate=50.0,
                                                duration_s=400.0, alpha=0.0), seed=7)
    same_rate = synthetic_workload(SyntheticWorkload(models=("m0",), total_rate=12.5, duration_s=400.0), seed=7)
    assert [r for r in more if r.model == "m0"] == same_rate


def test_synthetic_lengths_come_from_the_distribution_and_are_capped():
    spec = SyntheticWorkload(models=("a", "b"), total_rate=20.0, num_requests=2000,
                             length_dists=(("*", "sharegpt"), ("b", "bwb")))
    reqs = synthetic_workload(spec, seed=1)
    assert len(reqs) == 2000
    bwb = load_length_distribution("bwb")
    pairs = set(zip(bwb.input_lens.tolist(), bwb.output_lens.tolist()))
    b = [r for r in reqs if r.model == "b"]
    assert all((r.input_len, r.output_len) in pairs for r in b)
    assert np.mean([r.output_len for r in b]) == pytest.approx(1612.8, rel=0.05)
    sg = load_length_distribution("sharegpt")
    a = [r for r in reqs if r.model == "a"]
    assert np.mean([r.input_len for r in a]) == pytest.approx(float(np.mean(sg.input_lens)), rel=0.1)
    capped = synthetic_workload(
        SyntheticWorkload(models=("a",), total_rate=5.0, num_requests=300,
                          lengths=LengthConfig(scale=0.5, max_input_len=64, max_output_len=16)), seed=1)
    assert max(r.input_len for r in capped) == 64 and max(r.output_len for r in capped) == 16
    assert min(min(r.input_len, r.output_len) for r in capped) >= 1


def test_arrival_processes_have_the_requested_rate_and_cv():
    rng = np.random.default_rng(0)
    t = arrival_times(10.0, rng, kind="poisson", max_count=40_000)
    gaps = np.diff(np.concatenate([[0.0], t]))
    assert gaps.mean() == pytest.approx(0.1, rel=0.03)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, rel=0.05)
    g = arrival_times(10.0, np.random.default_rng(1), kind="gamma", cv=3.0, max_count=40_000)
    gg = np.diff(np.concatenate([[0.0], g]))
    assert gg.mean() == pytest.approx(0.1, rel=0.1)
    assert gg.std() / gg.mean() == pytest.approx(3.0, rel=0.1)
    d = arrival_times(5.0, np.random.default_rng(2), duration_s=100.0)
    assert d.max() < 100.0 and len(d) == pytest.approx(500, rel=0.2)
    both = arrival_times(5.0, np.random.default_rng(2), duration_s=100.0, max_count=10)
    assert both.tolist() == d[:10].tolist()


def test_rate_scale_applies_to_synthetic_rate():
    spec = SyntheticWorkload(models=("a",), total_rate=10.0, duration_s=300.0, rate_scale=0.5)
    reqs = synthetic_workload(spec, seed=3)
    assert len(reqs) / 300.0 == pytest.approx(5.0, rel=0.1)


def test_build_workload_validates_explicit_lists():
    reqs = [BenchRequest("a", 1.0, 5, 5), BenchRequest("b", 0.5, 3, 2)]
    assert [r.model for r in build_workload(reqs)] == ["b", "a"]
    with pytest.raises(WorkloadError):
        build_workload([])
    with pytest.raises(WorkloadError):
        build_workload([BenchRequest("a", 0.0, 0, 5)])
    with pytest.raises(WorkloadError):
        SyntheticWorkload(models=("a",), total_rate=1.0)  # neither duration nor count
    with pytest.raises(WorkloadError):
        SyntheticWorkload(models=("a",), total_rate=1.0, duration_s=1, arrival="uniform")
