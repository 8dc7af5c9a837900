"""Catalog, tensor-parallel cost model, the queueing estimator and the four placement
algorithms (torch-free)."""

from __future__ import annotations

import pytest

from seallm.cluster.baselines import place_alpaserve, place_muxserve
from seallm.cluster.catalog import CATALOG, catalog_model
from seallm.cluster.estimate import CostTable, ServiceLoad, estimate_group
from seallm.cluster.placement import node_partitions, place_dedicated, place_seallm
from seallm.cluster.spec import ClusterSpec, GroupPlan, PlacementPlan
from seallm.cost import DEVICES, BatchShape, DeviceSpec, RooflineCostModel

MIX = ["LLaMA-7B"] * 6 + ["LLaMA-13B"] * 2 + ["LLaMA-30B", "LLaMA-65B"]


def services(total_rate: float = 20.0, alpha: float = 0.9) -> list[ServiceLoad]:
    w = [(i + 1) ** -alpha for i in range(len(MIX))]
    return [ServiceLoad(f"s{i}", catalog_model(a), total_rate * x / sum(w), 800, 250) for i, (a, x) in
            enumerate(zip(MIX, w))]


def test_catalog_has_the_issue_architectures_with_their_real_sizes():
    for name in ("Llama-2-7B", "Llama-2-13B", "Llama-2-70B", "Llama-3.1-8B", "Llama-3.1-70B", "Qwen2.5-7B",
                 "Qwen2.5-14B", "Qwen2.5-32B", "Qwen2.5-72B", "Mistral-7B"):
        assert name in CATALOG
    l2 = catalog_model("llama-2-7b")  # case-insensitive
    assert l2.kv_spec.bytes_per_token == 2 * 32 * 32 * 128 * 2
    assert 6.5e9 < l2.weights_bytes / 2 < 7.0e9  # 6.7B parameters in bf16
    assert catalog_model("Llama-3.1-8B").kv_spec.bytes_per_token == 2 * 32 * 8 * 128 * 2  # GQA: 8 KV heads
    assert 69e9 < catalog_model("Llama-3.1-70B").weights_bytes / 2 < 72e9
    with pytest.raises(ValueError, match="catalog has"):
        catalog_model("GPT-5")


def test_tensor_parallelism_divides_the_work_and_adds_all_reduces():
    shape = catalog_model("Llama-2-13B").shape
    h100 = DEVICES["h100-sxm"]
    one, four = RooflineCostModel(shape, h100), RooflineCostModel(shape, h100, 4)
    for b in (BatchShape(1, 512), BatchShape(64, 64 * 512, 64, 64, 64 * 512), BatchShape(2048, 0, 1, 1, 2048 * 1024)):
        assert one.all_reduce_time(b) == 0.0
        ar = four.all_reduce_time(b)
        assert ar >= 2 * shape.num_layers * h100.interconnect_latency_s
        body = one.step_time(b) - h100.step_overhead_s
        assert four.step_time(b) == pytest.approx(body / 4 + ar + h100.step_overhead_s)
    no_link = DeviceSpec("x", {2: 1e12}, 1e12, 1 << 30)
    with pytest.raises(ValueError, match="peer link"):
        RooflineCostModel(shape, no_link, 2)


def test_node_partitions_are_power_of_two_splits():
    parts = node_partitions(8)
    assert len(parts) == 10 and len(set(parts)) == 10
    assert all(sum(p) == 8 and all(x & (x - 1) == 0 for x in p) and list(p) == sorted(p, reverse=True)
               for p in parts)
    assert node_partitions(4) == [(4,), (2, 2), (2, 1, 1), (1, 1, 1, 1)]


def test_estimate_grows_with_load_and_with_a_neighbour_until_overload():
    arch = catalog_model("LLaMA-7B")
    t = CostTable(arch, DEVICES["h100-sxm"], 1)
    alone = t.alone_s(800, 250)

    def e2e(rate, other=0.0):
        svcs = [(ServiceLoad("a", arch, rate, 800, 250), rate)]
        if other:
            svcs.append((ServiceLoad("b", arch, other, 800, 250), other))
        return estimate_group(svcs, [t] * len(svcs), [1e5] * len(svcs))

    lats = [e2e(r).e2e_s["a"] for r in (0.01, 1, 4, 8)]
    assert lats[0] == pytest.approx(alone, rel=0.05)
    assert lats == sorted(lats)
    assert e2e(4, other=4).e2e_s["a"] > e2e(4).e2e_s["a"]  # time sharing slows both
    over = e2e(200)
    assert not over.feasible and over.e2e_s["a"] > 10 * alone


@pytest.mark.parametrize("algorithm", [place_seallm, place_dedicated, place_alpaserve, place_muxserve])
@pytest.mark.parametrize("rate", [5.0, 60.0])
def test_every_plan_respects_memory_devices_and_tensor_parallel_limits(algorithm, rate):
    cluster = ClusterSpec("a100-80gb", num_nodes=2, devices_per_node=8)
    svcs = services(rate)
    plan = algorithm(svcs, cluster)
    plan.check(cluster, {s.name: s.arch for s in svcs})  # raises on any violation
    for g in plan.groups:
        assert g.tensor_parallel_size in (1, 2, 4, 8)
        for name in g.models:  # each model alone would fit its group (no split across nodes)
            assert cluster.min_group_size(next(s.arch for s in svcs if s.name == name)) <= g.tensor_parallel_size
    assert plan.objective < float("inf") or algorithm is place_alpaserve


def test_plan_check_catches_violations():
    cluster = ClusterSpec("a100-80gb", num_nodes=1, devices_per_node=4)
    arch = {"big": catalog_model("LLaMA-65B"), "small": catalog_model("LLaMA-7B")}
    with pytest.raises(ValueError, match="do not fit"):
        PlacementPlan("x", (GroupPlan(0, (0,), ("big",)), GroupPlan(0, (1,), ("small",)))).check(cluster, arch)
    with pytest.raises(ValueError, match="two groups"):
        PlacementPlan("x", (GroupPlan(0, (0, 1), ("big",)), GroupPlan(0, (1,), ("small",)))).check(cluster, arch)
    with pytest.raises(ValueError, match="not placed"):
        PlacementPlan("x", (GroupPlan(0, (0, 1, 2, 3), ("big",)),)).check(cluster, arch)


def test_dedicated_gives_each_model_its_own_devices_and_spares_to_the_busiest():
    cluster = ClusterSpec("a100-80gb", num_nodes=2, devices_per_node=8)
    svcs = services(20.0)
    plan = place_dedicated(svcs, cluster)
    assert all(len(g.models) == 1 for g in plan.groups)
    reps = {s.name: len(plan.replicas_of(s.name)) for s in svcs}
    assert reps["s0"] == max(reps.values()) > 1  # the most popular model gets the spare devices
    with pytest.raises(ValueError, match="needs .* devices"):
        place_dedicated(svcs, ClusterSpec("a100-80gb", num_nodes=1, devices_per_node=4))


def test_seallm_placement_is_no_worse_than_dedicated_by_its_own_prediction():
    cluster = ClusterSpec("h100-sxm", num_nodes=2, devices_per_node=8)
    for rate in (5.0, 40.0):
        svcs = services(rate)
        assert place_seallm(svcs, cluster).objective <= place_dedicated(svcs, cluster).objective * (1 + 1e-9)


def test_seallm_placement_shares_devices_when_models_outnumber_them():
    cluster = ClusterSpec("h100-sxm", num_nodes=1, devices_per_node=4)
    svcs = [ServiceLoad(f"m{i}", catalog_model("Llama-3.1-8B"), 0.5, 500, 200) for i in range(8)]
    plan = place_seallm(svcs, cluster)
    plan.check(cluster, {s.name: s.arch for s in svcs})
    assert sum(len(g.models) for g in plan.groups) >= 8 and max(len(g.models) for g in plan.groups) >= 2
    with pytest.raises(ValueError, match="needs"):
        place_dedicated(svcs, cluster)


def test_muxserve_places_each_model_once_and_alpaserve_replicates():
    cluster = ClusterSpec("a100-80gb", num_nodes=2, devices_per_node=8)
    svcs = services(20.0)
    mux = place_muxserve(svcs, cluster)
    assert all(len(mux.replicas_of(s.name)) == 1 for s in svcs)  # static, one unit per LLM
    alpa = place_alpaserve(svcs, cluster)
    assert sum(len(g.models) for g in alpa.groups) > len(svcs)  # fills memory with replicas
    sizes = {g.tensor_parallel_size for g in alpa.groups}
    assert len(sizes) == 1  # one group configuration: equal groups
