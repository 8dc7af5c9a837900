"""The cluster simulator and the system comparison (torch-free)."""

from __future__ import annotations

import collections

import pytest

from seallm.bench.workload import BenchRequest, WorkloadError, split_services
from seallm.cluster.catalog import catalog_model
from seallm.cluster.config import ClusterConfig, ClusterWorkload, ServiceEntry, default_cluster, load_cluster
from seallm.cluster.spec import ClusterSpec
from seallm.sim.cluster import SYSTEMS, place, service_loads, simulate_cluster
from seallm.sim.compare import compare_systems, format_comparison

SMALL = ClusterConfig(
    ClusterSpec("a100-80gb", num_nodes=1, devices_per_node=8),
    tuple(ServiceEntry(f"m{i}", catalog_model(a)) for i, a in
          enumerate(["Llama-3.1-8B", "Llama-3.1-8B", "Qwen2.5-7B", "Llama-2-13B", "Mistral-7B"])),
    ClusterWorkload(traces=(), rate=6.0, duration_s=20.0, alpha=0.9),
    slo_scales=(2.0, 5.0))


def test_split_services_follows_the_power_law_and_drifts():
    base = [BenchRequest("_", 0.01 * i, 10, 10) for i in range(20000)]
    out = split_services(base, ["a", "b", "c"], alpha=1.0, seed=1)
    n = collections.Counter(r.model for r in out)
    z = 1 + 1 / 2 + 1 / 3
    assert n["a"] / len(out) == pytest.approx(1 / z, abs=0.02) and n["c"] / len(out) == pytest.approx(1 / 3 / z, abs=0.02)
    assert [r.arrival_s for r in out] == [r.arrival_s for r in base]
    assert split_services(base, ["a", "b", "c"], alpha=1.0, seed=1) == out  # deterministic
    drift = split_services(base, ["a", "b", "c"], alpha=1.0, seed=1, drift_period_s=100.0)
    second = collections.Counter(r.model for r in drift if 100 <= r.arrival_s < 200)
    assert second.most_common(1)[0][0] == "c"  # in period 1 the ranks moved by one: c is the most popular
    with pytest.raises(WorkloadError):
        split_services(base, ["a", "a"])


@pytest.mark.parametrize("system", list(SYSTEMS))
def test_every_request_finishes_exactly_once_and_runs_are_deterministic(system):
    names = [s.name for s in SMALL.services]
    reqs = SMALL.workload.requests(names, seed=3)
    loads = service_loads(reqs, SMALL.archs, SMALL.workload.replay_s)
    spec = SYSTEMS[system]
    plan = place(spec, loads, SMALL.cluster)
    plan.check(SMALL.cluster, SMALL.archs)
    a = simulate_cluster(reqs, plan, SMALL.cluster, loads, spec, SMALL.scheduler)
    assert [r.index for r in a.records] == list(range(len(reqs)))
    assert all(r.ok and r.tokens_out == q.output_len for r, q in zip(a.records, reqs))
    assert all(r.finish_s >= r.first_token_s >= r.sent_s for r in a.records)
    b = simulate_cluster(reqs, plan, SMALL.cluster, loads, spec, SMALL.scheduler)
    assert [(r.first_token_s, r.finish_s) for r in a.records] == [(r.first_token_s, r.finish_s) for r in b.records]


def test_groups_only_serve_the_models_placed_on_them():
    reqs = [BenchRequest("m0", 0.0, 100, 20), BenchRequest("m1", 0.0, 100, 20)]
    loads = service_loads(reqs, {"m0": catalog_model("Llama-2-7B"), "m1": catalog_model("Llama-2-7B")}, 1.0)
    cluster = ClusterSpec("h100-sxm", 1, 2)
    plan = place(SYSTEMS["vllm"], loads, cluster)
    assert [g.models for g in plan.groups] == [("m0",), ("m1",)]
    run = simulate_cluster(reqs, plan, cluster, loads, SYSTEMS["vllm"])
    # alone on their own device, the two identical requests take exactly the same time
    assert run.records[0].finish_s == pytest.approx(run.records[1].finish_s)
    with pytest.raises(ValueError, match="not placed"):
        simulate_cluster([BenchRequest("m2", 0.0, 10, 2)], plan, cluster, loads, SYSTEMS["vllm"])


def test_compare_systems_gives_a_table_with_ratios_to_seallm():
    res = compare_systems(SMALL, ["seallm", "vllm"], seed=0)
    assert set(res) == {"seallm", "vllm"}
    for r in res.values():
        s = r.summary()
        assert s["completed"] == len(r.run.records) and s["failed"] == 0
        assert set(s["slo_attainment"]) == {"2.0", "5.0"} and all(0 <= v <= 1 for v in s["slo_attainment"].values())
        assert s["normalized_latency_s"] > 0 and s["p99_e2e_s"] >= s["p50_e2e_s"]
    table = format_comparison(res, SMALL.slo_scales)
    assert "seallm" in table and "vllm" in table and "x)" in table
    with pytest.raises(ValueError, match="unknown systems"):
        compare_systems(SMALL, ["nope"])


def test_cluster_files(tmp_path):
    d = default_cluster()
    assert d.cluster.num_devices == 32 and len(d.services) == 19
    assert collections.Counter(s.arch.name for s in d.services) == {"LLaMA-7B": 12, "LLaMA-13B": 4,
                                                                     "LLaMA-30B": 2, "LLaMA-65B": 1}
    f = tmp_path / "c.yaml"
    f.write_text("cluster: {device: h100, num_nodes: 1, devices_per_node: 2}\n"
                 "mix: {Llama-3.1-8B: 2, Qwen2.5-7B: 1}\n"
                 "workload: {synthetic: {rate: 3, arrival: gamma, cv: 2}, duration_s: 10, drift_period_s: 5}\n"
                 "slo_scales: [3]\nscheduler: {max_num_batched_tokens: 1024}\n")
    c = load_cluster(str(f))
    assert [s.name for s in c.services] == ["llama-3.1-8b-0", "llama-3.1-8b-1", "qwen2.5-7b-2"]
    assert c.workload.arrival == "gamma" and c.workload.drift_period_s == 5 and c.slo_scales == (3.0,)
    assert c.scheduler.max_num_batched_tokens == 1024
    reqs = c.workload.requests([s.name for s in c.services], 0)
    assert reqs and all(r.arrival_s < 10 for r in reqs)
    for bad, msg in (("cluster: {device: tpu}\nmix: {LLaMA-7B: 1}\n", "unknown device"),
                     ("mix: {GPT: 1}\n", "catalog"),
                     ("mix: {LLaMA-7B: 1}\nworkload: {bogus: 1}\n", "unknown keys"),
                     ("services: [{name: a, arch: LLaMA-7B}]\nmix: {LLaMA-7B: 1}\n", "one of the two"),
                     ("mix: {LLaMA-7B: 1}\nworkload: {traces: [conv], synthetic: {rate: 1}}\n", "not both")):
        f.write_text(bad)
        with pytest.raises(ValueError, match=msg):
            load_cluster(str(f))
