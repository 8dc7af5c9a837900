"""The cluster simulator and the system comparison (torch-free)."""

from __future__ import annotations

import collections
import math
from dataclasses import replace

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
    with pytest.raises(ValueError, match="unknown system"):
        compare_systems(SMALL, ["nope"])
    with pytest.raises(ValueError, match="unknown replacement mode"):
        compare_systems(SMALL, ["seallm@sometimes"])


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


def test_a_replacement_loses_no_request_and_is_deterministic():
    from seallm.cluster.replacement import ReplacementConfig

    cfg = replace(SMALL, workload=replace(SMALL.workload, rate=12.0, duration_s=40.0, alpha=1.5, drift_period_s=10.0))
    names = [s.name for s in cfg.services]
    reqs = cfg.workload.requests(names, seed=1)
    loads = service_loads(reqs, cfg.archs, cfg.workload.replay_s)
    spec = SYSTEMS["seallm"]
    plan = place(spec, loads, cfg.cluster)
    fixed = ReplacementConfig(mode="fixed", interval_s=8.0)
    a = simulate_cluster(reqs, plan, cfg.cluster, loads, spec, cfg.scheduler, replacement=fixed)
    assert a.num_switches >= 2  # popularity moved every 10 s: the plan changed
    assert all(r.ok and r.tokens_out == q.output_len for r, q in zip(a.records, reqs))  # migrated requests too
    assert all(list(r.token_times_s) == sorted(r.token_times_s) and r.first_token_s >= r.sent_s for r in a.records)
    b = simulate_cluster(reqs, plan, cfg.cluster, loads, spec, cfg.scheduler, replacement=fixed)
    assert [r.token_times_s for r in a.records] == [r.token_times_s for r in b.records]
    none = simulate_cluster(reqs, plan, cfg.cluster, loads, spec, cfg.scheduler,
                            replacement=ReplacementConfig(mode="none"))
    assert none.num_switches == 0 and not none.replacements
    plain = simulate_cluster(reqs, plan, cfg.cluster, loads, spec, cfg.scheduler)
    assert [r.token_times_s for r in none.records] == [r.token_times_s for r in plain.records]


def test_a_switch_migrates_in_flight_requests_and_waits_for_the_weights():
    """serve_replicas under a driver that rebuilds model a's only group at t = 2 s with a
    5 s load: a's requests in flight migrate and finish with every token, a's requests that
    arrive meanwhile start after the load, b is never interrupted."""
    from seallm.cluster.router import Router
    from seallm.cluster.spec import GroupPlan
    from seallm.sim.cluster import group_replica
    from seallm.sim.device import records_of, serve_replicas
    from seallm.sim.replacement import NewReplica, Switch

    cluster = ClusterSpec("h100-sxm", 1, 2)
    archs = {"a": catalog_model("Llama-2-7B"), "b": catalog_model("Llama-2-7B")}
    reqs = [BenchRequest("a" if i % 2 else "b", 0.1 * i, 200, 100) for i in range(100)]
    loads = service_loads(reqs, archs, 10.0)
    ga, gb = GroupPlan(0, (0,), ("a",)), GroupPlan(0, (1,), ("b",))
    make = lambda g, start=0.0: group_replica(g, loads, cluster, SYSTEMS["seallm"], SMALL.scheduler, 300.0,  # noqa: E731
                                              {"a": 1, "b": 1}, start)

    class Driver:
        next_check_s = 2.0
        seen: list[str] = []

        def observe(self, model, t, i, o):
            self.seen.append(model)

        def check(self, t):
            self.next_check_s = math.inf
            return Switch((0,), (NewReplica(frozenset("a"), 5.0, (0,), lambda start: make(ga, start)),))

    reps = [make(ga), make(gb)]
    out = serve_replicas(reqs, reps, {"a", "b"}, Router("least_loaded"), 10_000_000,
                         [frozenset("a"), frozenset("b")], Driver())
    recs = records_of(reqs, *out)
    assert len(reps) == 3 and len(Driver.seen) == len(reqs)  # the new replica appended; each arrival seen once
    assert all(r.ok and r.tokens_out == 100 for r in recs)
    stop = max(2.0, reps[0].now)
    a_recs = [r for r in recs if r.model == "a"]
    migrated = [r for r in a_recs if r.sent_s < 2.0 < r.finish_s]
    assert migrated and all(not any(stop < t < stop + 5.0 for t in r.token_times_s) for r in a_recs)
    assert all(r.first_token_s >= stop + 5.0 for r in a_recs if r.sent_s > 2.0)
    b_gaps = [max(b - a for a, b in zip(r.token_times_s, r.token_times_s[1:])) for r in recs if r.model == "b"]
    assert max(b_gaps) < 1.0  # b's group kept serving
