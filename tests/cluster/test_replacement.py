"""Adaptive replacement's pieces: rate windows, plan alignment and differences, switching
cost, and the three modes' decisions (torch-free)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from seallm.cluster.catalog import catalog_model
from seallm.cluster.estimate import ServiceLoad
from seallm.cluster.placement import Scorer, place_on_groups, place_seallm
from seallm.cluster.replacement import (RateMonitor, ReplacementConfig, Replanner, align_plan, plan_change,
                                        predicted_latency, rate_shift, switching_cost)
from seallm.cluster.spec import ClusterSpec, GroupPlan, PlacementPlan

CLUSTER = ClusterSpec("a100-80gb", num_nodes=2, devices_per_node=4)
ARCHS = ["Llama-3.1-8B", "Llama-3.1-8B", "Qwen2.5-7B", "Mistral-7B", "Llama-2-13B"]


def loads(rates: list[float]) -> list[ServiceLoad]:
    return [ServiceLoad(f"m{i}", catalog_model(a), r, 600, 200) for i, (a, r) in enumerate(zip(ARCHS, rates))]


def test_rate_monitor_counts_arrivals_in_sliding_windows():
    mon = RateMonitor(loads([1.0] * 5))
    for k in range(100):
        mon.observe("m0", k * 0.1, 100, 10)  # 10 req/s over [0, 10)
    mon.observe("m1", 9.5, 300, 30)
    r = mon.rates(10.0, 5.0)
    assert r["m0"] == pytest.approx(10.0, rel=0.05) and r["m1"] == pytest.approx(0.2) and r["m2"] == 0.0
    assert mon.rates(20.0, 5.0)["m0"] == 0.0  # the window slid past them
    by = {s.name: s for s in mon.loads(10.0, 5.0)}
    assert by["m0"].input_len == 100 and by["m1"].output_len == 30
    assert by["m2"].input_len == 600  # no arrivals of its own: the lengths it was placed with


def test_rate_shift_is_zero_for_the_same_traffic_and_grows_with_the_move():
    a = loads([8, 1, 1, 1, 1])
    assert rate_shift(a, a) == 0.0
    assert rate_shift(a, loads([16, 2, 2, 2, 2])) == pytest.approx(1.0)  # total doubled, same shares
    moved = rate_shift(a, loads([1, 8, 1, 1, 1]))
    assert moved == pytest.approx(7 / 12)  # total variation of the shares


def test_align_plan_relabels_nodes_so_unchanged_groups_keep_their_devices():
    old = place_seallm(loads([6, 3, 2, 1, 1]), CLUSTER)
    per = CLUSTER.devices_per_node
    swapped = PlacementPlan("seallm", tuple(replace(g, node=1 - g.node, devices=tuple(
        (d + per) % (2 * per) for d in g.devices)) for g in old.groups))
    swapped.check(CLUSTER, {f"m{i}": catalog_model(a) for i, a in enumerate(ARCHS)})
    assert plan_change(old, swapped).retired  # the same groups, other devices: would move
    aligned = align_plan(old, swapped, CLUSTER)
    aligned.check(CLUSTER, {f"m{i}": catalog_model(a) for i, a in enumerate(ARCHS)})
    ch = plan_change(old, aligned)
    assert not ch.retired and not ch.added and len(ch.kept) == sum(1 for g in old.groups if g.models)


def test_plan_change_and_switching_cost():
    old = PlacementPlan("x", (GroupPlan(0, (0,), ("m0", "m1")), GroupPlan(0, (1,), ("m2",)),
                              GroupPlan(0, (2, 3), ("m3", "m4"))))
    new = PlacementPlan("x", (GroupPlan(0, (0,), ("m0",)), GroupPlan(0, (1,), ("m1", "m2")),
                              GroupPlan(0, (2, 3), ("m3", "m4"))))
    ch = plan_change(old, new)
    assert [g.devices for g in ch.kept] == [(2, 3)]
    assert sorted(g.devices for g in ch.retired) == [(0,), (1,)] == sorted(g.devices for g in ch.added)
    scorer = Scorer(CLUSTER, loads([4, 4, 2, 1, 1]))
    slow, fast = (switching_cost(ch, old, scorer, bw) for bw in (2e9, 25e9))
    assert slow > fast > 0  # loading from disk costs more than from the host cache
    assert switching_cost(plan_change(old, old), old, scorer, 2e9) == 0.0


def test_predicted_latency_grows_with_overload():
    plan = PlacementPlan("x", (GroupPlan(0, (0,), ("m0", "m1", "m2", "m3")), GroupPlan(0, (1, 2, 3), ()),
                               GroupPlan(1, (4, 5, 6, 7), ("m4",))))
    light = predicted_latency(plan, Scorer(CLUSTER, loads([1, 1, 1, 1, 1])))
    heavy = predicted_latency(plan, Scorer(CLUSTER, loads([60, 60, 60, 60, 1])))
    assert math.isfinite(heavy) and heavy > 10 * light
    unplaced = PlacementPlan("x", (GroupPlan(0, (0,), ("m0",)),))
    assert predicted_latency(unplaced, Scorer(CLUSTER, loads([1] * 5))) == math.inf


def test_place_on_groups_keeps_the_partition():
    start = place_seallm(loads([6, 3, 2, 1, 1]), CLUSTER)
    again = place_on_groups(loads([1, 1, 2, 3, 6]), CLUSTER, start)
    assert sorted(g.devices for g in again.groups) == sorted(g.devices for g in start.groups)
    again.check(CLUSTER, {f"m{i}": catalog_model(a) for i, a in enumerate(ARCHS)})


def test_config_validation():
    with pytest.raises(ValueError, match="unknown replacement mode"):
        ReplacementConfig(mode="sometimes")
    with pytest.raises(ValueError, match="positive seconds"):
        ReplacementConfig(interval_s=0)
    with pytest.raises(ValueError, match="load_bandwidth"):
        ReplacementConfig(load_bandwidth=-1)


def replanner(mode: str, start: list[float], **kw) -> Replanner:
    base = loads(start)
    return Replanner(ReplacementConfig(mode=mode, **kw), CLUSTER, base, place_seallm(base, CLUSTER),
                     lambda ls: place_seallm(ls, CLUSTER),
                     reassign=lambda ls, cur: place_on_groups(ls, CLUSTER, cur))


def feed(rp: Replanner, rates: list[float], t0: float, t1: float) -> None:
    """Evenly spaced arrivals of each service at its rate in [t0, t1)."""
    events = []
    for i, r in enumerate(rates):
        if r > 0:
            k = 0
            while t0 + k / r < t1:
                events.append((t0 + k / r, f"m{i}"))
                k += 1
    for t, m in sorted(events):
        rp.observe(m, t, 600, 200)


def run_checks(rp: Replanner, schedule: list[tuple[float, list[float]]], end: float) -> list[PlacementPlan]:
    """Traffic ``rates`` from each ``(start, rates)`` on, checks at the replanner's times."""
    switched = []
    t = 0.0
    for k, (start, rates) in enumerate(schedule):
        stop = schedule[k + 1][0] if k + 1 < len(schedule) else end
        feed(rp, rates, start, stop)
        while rp.next_check_s <= stop:
            plan = rp.check(rp.next_check_s)
            if plan is not None:
                switched.append(plan)
        t = stop
    assert t == end
    return switched


def test_none_never_looks_and_fixed_switches_on_its_interval():
    rp = replanner("none", [6, 3, 2, 1, 1])
    assert rp.next_check_s == math.inf
    rp = replanner("fixed", [6, 3, 2, 1, 1], interval_s=30.0)
    switched = run_checks(rp, [(0.0, [6, 3, 2, 1, 1]), (30.0, [1, 1, 2, 3, 30])], 90.0)
    assert [d.time_s for d in rp.decisions] == [30.0, 60.0, 90.0]
    assert switched and all(d.window_s == 30.0 for d in rp.decisions)
    switched[-1].check(CLUSTER, {f"m{i}": catalog_model(a) for i, a in enumerate(ARCHS)})


def test_adaptive_keeps_the_plan_on_steady_traffic_and_switches_when_popularity_moves():
    steady = replanner("adaptive", [6, 3, 2, 1, 1])
    assert run_checks(steady, [(0.0, [6, 3, 2, 1, 1])], 300.0) == []
    assert max(d.window_s for d in steady.decisions[-5:]) >= 120.0  # steady: long windows win
    moving = replanner("adaptive", [6, 3, 2, 1, 1])
    switched = run_checks(moving, [(0.0, [6, 3, 2, 1, 1]), (120.0, [1, 1, 2, 3, 40])], 240.0)
    assert switched, moving.decisions
    first = next(d for d in moving.decisions if d.switched)
    assert first.time_s > 120.0 and first.gain_s > first.cost_s and first.predicted_e2e_s[1] < first.predicted_e2e_s[0]
    hot = [g for g in switched[-1].groups if "m4" in g.models]
    assert len(hot) >= 2 or hot[0].tensor_parallel_size >= 2  # the newly hot service got more devices
