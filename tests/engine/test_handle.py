"""Replica handles: the same messages drive an in-process replica, a simulated one, and
(tests/server) the engine process."""

from __future__ import annotations

from dataclasses import dataclass

from seallm.core import SamplingParams
from seallm.cost import MaxAffineCostModel
from seallm.engine.handle import LocalReplica, ReplicaHandle
from seallm.engine.messages import AddRequest
from seallm.engine.replica import ReplicaModel, ReplicaSpec
from seallm.kv import KVSpec
from seallm.sched import SchedulerConfig
from seallm.sim.replica import SimulatedReplica, simulated_replica

SPEC = KVSpec(2, 2, 8, 4)
COST = MaxAffineCostModel(((1e-4, 0.0, 1e-3),))


@dataclass
class Cfg:
    vocab_size: int = 100
    max_model_len: int = 256
    eos_token_ids: tuple = ()


def _sim(models, max_resident=None) -> SimulatedReplica:
    spec = ReplicaSpec(tuple(ReplicaModel(m, SPEC, 1_000_000) for m in models), kv_cache_bytes=64 * 4096,
                       page_size_bytes=4096, device="simulated", scheduler=SchedulerConfig(64, 8),
                       scheduling_policy="fcfs", max_resident_models=max_resident)
    return simulated_replica(spec, {m: COST for m in models}, {m: Cfg() for m in models},
                             weights_bytes={m: 1_000_000 for m in models})


def _add(rid, model, t, n=5):
    return AddRequest(rid, model, [7] * 10, SamplingParams(max_tokens=n, ignore_eos=True), t)


def test_two_simulated_replicas_interleaved_by_events_serve_everything():
    replicas: dict[str, ReplicaHandle] = {"r0": _sim(["a", "b"]), "r1": _sim(["c", "d", "e"], max_resident=2)}
    arrivals = sorted((0.01 * i, f"q{i}", ["a", "b", "c", "d", "e"][i % 5]) for i in range(30))
    home = {"a": "r0", "b": "r0", "c": "r1", "d": "r1", "e": "r1"}
    tokens: dict[str, int] = {}
    finished: dict[str, str] = {}
    i = 0
    while True:
        busy = [(rep.next_event_time(), name) for name, rep in replicas.items() if rep.next_event_time() is not None]
        t_next_arrival = arrivals[i][0] if i < len(arrivals) else None
        if not busy and t_next_arrival is None:
            break
        t_rep, name = min(busy) if busy else (None, None)
        if t_next_arrival is not None and (t_rep is None or t_next_arrival <= t_rep):
            t, rid, model = arrivals[i]
            i += 1
            rep = replicas[home[model]]
            rep.advance_to(t)
            rep.submit(_add(rid, model, t))
            continue
        rep = replicas[name]
        rep.advance_to(t_rep)
        rep.step()
        for out in rep.outputs():
            for d in out.deltas:
                tokens[d.request_id] = tokens.get(d.request_id, 0) + len(d.token_ids)
                if d.finish_reason is not None:
                    finished[d.request_id] = d.finish_reason
    assert len(finished) == 30 and set(finished.values()) == {"length"}
    assert all(n == 5 for n in tokens.values())
    snap = replicas["r1"].snapshot()
    assert sum(m.resident for m in snap.models.values()) == 2
    assert snap.kv_pages_free == snap.kv_pages_total
    assert replicas["r1"].core.residency.num_loads >= 1


def test_local_replica_with_real_weights_matches_offline_greedy(checkpoints):
    from seallm import LLM
    from seallm.deploy import DeploymentConfig, ModelEntry, build_engine

    prompt = [5, 9, 33, 7, 100, 3]
    params = SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True)
    ref = LLM({"m": checkpoints["qwen2"]}, kv_cache_memory="8MiB").generate([prompt], params, model="m")[0]
    stack = build_engine(DeploymentConfig(models=(ModelEntry("m", checkpoints["qwen2"]),), kv_cache_memory="8MiB"))
    rep = LocalReplica(stack.core, stack.model_configs)
    assert [m.name for m in rep.ready.models] == ["m"] and rep.ready.models[0].resident
    rep.submit(AddRequest("x", "m", prompt, params, 0.0))
    got, done = [], False
    while not done:
        rep.step()
        for out in rep.outputs():
            for d in out.deltas:
                got += d.token_ids
                done = done or d.finish_reason is not None
    assert got == ref.token_ids
