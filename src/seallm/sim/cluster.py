"""The cluster simulator: every device group of a placement plan is a simulated replica
running the real scheduler, policy and unified-KV bookkeeping; step times come from the
roofline cost model of the catalog architecture on the group (tensor parallelism included).
Torch-free and deterministic.

A *system* is a placement algorithm, a scheduling policy and a routing rule
(:data:`SYSTEMS`): SeaLLM (its two-stage placement, the doubling-budget policy, one unified
KV pool per group) against the three baselines re-implemented from
``shared/reference/multi-model-sharing.md`` (vLLM: dedicated devices, FCFS, each model its
own pool; AlpaServe: its simulator-guided greedy, FCFS; MuxServe: its placement greedy and
ADBS quotas). Every system sees the same requests and is routed join-the-shortest-queue
among the groups that hold the model (SeaLLM §2.3's "least queued work", AlpaServe's
dispatch to the shortest queue).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from seallm.bench.baseline import AloneLatency
from seallm.bench.records import RequestRecord
from seallm.bench.workload import BenchRequest
from seallm.cluster.config import DEFAULT_SCHEDULER
from seallm.cluster.baselines import place_alpaserve, place_muxserve
from seallm.cluster.estimate import CostTable, ServiceLoad
from seallm.cluster.placement import place_dedicated, place_seallm
from seallm.cluster.router import Router
from seallm.cluster.spec import ClusterSpec, PlacementPlan
from seallm.cost import RooflineCostModel
from seallm.engine.replica import ReplicaModel, ReplicaSpec
from seallm.sched import SchedulerConfig, make_policy
from seallm.sim.device import SimModel, records_of, serve_replicas
from seallm.sim.replica import simulated_replica


@dataclass(frozen=True)
class SystemSpec:
    """One serving system of the comparison.

    Attributes:
        name: its name. placement: ``seallm``, ``dedicated``, ``alpaserve`` or ``muxserve``.
        scheduling_policy: the policy of every group (:func:`~seallm.sched.make_policy`).
        routing_policy: the router's rule among a model's groups.
    """

    name: str
    placement: str
    scheduling_policy: str
    routing_policy: str = "least_loaded"


SYSTEMS: dict[str, SystemSpec] = {s.name: s for s in (
    SystemSpec("seallm", "seallm", "seallm"),
    SystemSpec("vllm", "dedicated", "fcfs"),
    SystemSpec("alpaserve", "alpaserve", "fcfs"),
    SystemSpec("muxserve", "muxserve", "muxserve"),
)}

PLACEMENTS = {"seallm": place_seallm, "dedicated": place_dedicated, "alpaserve": place_alpaserve,
              "muxserve": place_muxserve}


def service_loads(requests: Sequence[BenchRequest], archs: Mapping[str, object],
                  duration_s: float | None = None) -> list[ServiceLoad]:
    """Per service (in ``archs`` order): its rate over ``duration_s`` (default: the last
    arrival) and mean lengths in ``requests``; a service without requests gets rate 0 and
    the overall mean lengths.

    Raises:
        ValueError: no request, or a request of a service not in ``archs``.
    """
    if not requests:
        raise ValueError("no request")
    unknown = sorted({r.model for r in requests} - set(archs))
    if unknown:
        raise ValueError(f"requests of unknown services {unknown}")
    span = duration_s or max(r.arrival_s for r in requests) or 1.0
    mean_in = sum(r.input_len for r in requests) / len(requests)
    mean_out = sum(r.output_len for r in requests) / len(requests)
    out = []
    for name, arch in archs.items():
        rs = [r for r in requests if r.model == name]
        i = sum(r.input_len for r in rs) / len(rs) if rs else mean_in
        o = sum(r.output_len for r in rs) / len(rs) if rs else mean_out
        out.append(ServiceLoad(name, arch, len(rs) / span, i, o))
    return out


def alone_latency(service: ServiceLoad, cluster: ClusterSpec) -> AloneLatency:
    """Served-alone latency model of ``service`` on the smallest group that holds it (the
    SLO reference, the same for every system): TTFT linear in the prompt between 1 and
    2048 tokens (one prefill iteration), TPOT one decode iteration at the mean context."""
    size = cluster.min_group_size(service.arch) or cluster.devices_per_node
    t = CostTable(service.arch, cluster.spec, size)
    base = t.prefill_s(1)
    per = (t.prefill_s(2048) - base) / 2047
    return AloneLatency(base, max(per, 0.0), t.decode_s(1, service.input_len + service.output_len / 2))


@dataclass(frozen=True)
class ClusterRun:
    """What one system did on the cluster.

    Attributes:
        system: its name. plan: the placement it served with.
        records: one per request, in workload order (times in s).
        num_steps: iterations over all groups. busy_s: seconds groups computed.
        num_preemptions: requests that lost their KV pages. makespan_s: last event (s).
        wall_s: wall time of the simulation (s, excluding placement).
    """

    system: str
    plan: PlacementPlan
    records: tuple[RequestRecord, ...]
    num_steps: int
    busy_s: float
    num_preemptions: int
    makespan_s: float
    wall_s: float


def simulate_cluster(requests: Sequence[BenchRequest], plan: PlacementPlan, cluster: ClusterSpec,
                     services: Sequence[ServiceLoad], system: SystemSpec,
                     scheduler: SchedulerConfig | None = None, max_steps: int = 200_000_000) -> ClusterRun:
    """Serve ``requests`` on the groups of ``plan`` with ``system``'s policy and routing.

    Each non-empty group becomes one simulated replica holding its services' weights, with
    a unified KV pool of the group's memory left after them
    (:meth:`ClusterSpec.kv_bytes`) and the roofline cost model of each architecture at the
    group's tensor-parallel degree. MuxServe's ADBS gets each group's per-replica rates and
    the workload's mean sequence length.

    Raises:
        ValueError: a service of a request placed nowhere, or as
            :func:`~seallm.sim.device.serve_replicas`.
    """
    by_name = {s.name: s for s in services}
    scheduler = scheduler or DEFAULT_SCHEDULER
    seq_len = sum(r.input_len + r.output_len for r in requests) / max(len(requests), 1)
    reps, served = [], []
    for g in plan.groups:
        if not g.models:
            continue
        tp = g.tensor_parallel_size
        svcs = [by_name[m] for m in g.models]
        models = [SimModel(s.name, s.arch.kv_spec, RooflineCostModel(s.arch.shape, cluster.spec, tp),
                           s.arch.weights_bytes, s.arch.max_model_len, s.arch.shape.vocab_size,
                           (s.arch.eos_token_id,)) for s in svcs]
        spec = ReplicaSpec(models=tuple(ReplicaModel(m.name, m.kv_spec, m.weights_bytes) for m in models),
                           kv_cache_bytes=cluster.kv_bytes(tp, [s.arch for s in svcs]), device="simulated",
                           scheduler=scheduler, scheduling_policy=system.scheduling_policy)
        options = {}
        if system.scheduling_policy == "muxserve":
            options = {"rates": {s.name: s.rate / len(plan.replicas_of(s.name)) for s in svcs},
                       "avg_seq_len": seq_len}
        reps.append(simulated_replica(spec, {m.name: m.cost_model for m in models}, {m.name: m for m in models},
                                      policy=make_policy(system.scheduling_policy, options),
                                      swap_bandwidth=cluster.spec.host_link_bandwidth))
        served.append(frozenset(g.models))
    missing = sorted({r.model for r in requests} - set().union(*served))
    if missing:
        raise ValueError(f"services {missing} are not placed on any group")
    t0 = time.perf_counter()
    arrived, token_times, finish, refused = serve_replicas(requests, reps, set().union(*served),
                                                           Router(system.routing_policy), max_steps, served)
    wall = time.perf_counter() - t0
    return ClusterRun(system.name, plan, records_of(requests, arrived, token_times, finish, refused),
                      sum(r.core.num_steps for r in reps), sum(r.core.executor.busy_s for r in reps),
                      sum(r.core.scheduler.num_preemptions for r in reps), max(r.now for r in reps), wall)


def place(system: SystemSpec, services: Sequence[ServiceLoad], cluster: ClusterSpec,
          scheduler: SchedulerConfig | None = None) -> PlacementPlan:
    """The placement ``system`` serves with, for these service loads, estimated with the
    token budget of ``scheduler`` (default: the cluster files' 2048).

    Raises:
        ValueError: an unknown placement, or as the placement algorithm.
    """
    if system.placement not in PLACEMENTS:
        raise ValueError(f"unknown placement {system.placement!r}; known: {sorted(PLACEMENTS)}")
    chunk = (scheduler or DEFAULT_SCHEDULER).max_num_batched_tokens
    return PLACEMENTS[system.placement](services, cluster, chunk_tokens=chunk)
