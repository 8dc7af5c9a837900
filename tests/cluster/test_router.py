"""The router's rule across replicas (torch-free)."""

from __future__ import annotations

import pytest

from seallm.cluster.router import ReplicaView, Router

AB = frozenset({"a", "b"})


def test_least_loaded_prefers_resident_then_shortest_queue():
    r = Router("least_loaded")
    views = [ReplicaView("r0", AB, frozenset({"a"}), load=5), ReplicaView("r1", AB, frozenset({"a"}), load=2),
             ReplicaView("r2", AB, frozenset({"b"}), load=0)]
    assert r.route("a", views) == 1  # resident on r0 and r1; r1 has the shorter queue
    assert r.route("b", views) == 2
    views[2] = ReplicaView("r2", AB, frozenset(), load=0)
    assert r.route("b", views) == 2  # resident nowhere: the least loaded
    assert r.route("a", [ReplicaView("r0", AB, load=3), ReplicaView("r1", AB, load=3)]) == 0  # tie: order


def test_dead_replicas_and_unlisted_models_are_skipped():
    r = Router()
    views = [ReplicaView("r0", AB, AB, alive=False), ReplicaView("r1", frozenset({"b"}), AB, load=9)]
    assert r.route("a", views) is None
    assert r.route("b", views) == 1
    assert r.route("zzz", views) is None


def test_round_robin_takes_turns_per_model():
    r = Router("round_robin")
    views = [ReplicaView("r0", AB, load=100), ReplicaView("r1", AB), ReplicaView("r2", frozenset({"b"}))]
    assert [r.route("a", views) for _ in range(4)] == [0, 1, 0, 1]
    assert [r.route("b", views) for _ in range(3)] == [0, 1, 2]


def test_unknown_policy():
    with pytest.raises(ValueError, match="unknown routing policy"):
        Router("random")


def test_slo_routing_tries_every_live_replica_in_turn():
    r = Router("slo")
    views = [ReplicaView("r0", AB), ReplicaView("r1", AB, alive=False), ReplicaView("r2", AB),
             ReplicaView("r3", frozenset({"b"}))]
    assert r.try_order("a", views) == [0, 2]  # first in turn, then the next live replica
    assert r.try_order("a", views) == [2, 0]
    assert r.try_order("b", views) == [0, 2, 3]
    assert r.try_order("zzz", views) == []
    assert Router("least_loaded").try_order("a", views) == [0]  # other policies: one try
