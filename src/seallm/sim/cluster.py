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
from seallm.cluster.placement import place_dedicated, place_on_groups, place_seallm
from seallm.cluster.router import Router
from seallm.cluster.replacement import ReplacementConfig, ReplacementDecision, Replanner
from seallm.cluster.spec import ClusterSpec, GroupPlan, PlacementPlan
from seallm.cost import RooflineCostModel
from seallm.engine.replica import ReplicaModel, ReplicaSpec
from seallm.sched import SchedulerConfig, make_policy
from seallm.sim.device import SimModel, records_of, serve_replicas
from seallm.sim.replacement import ReplacementDriver
from seallm.sim.replica import SimulatedReplica, simulated_replica


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
        replacements: every look of the replanner (:class:`ReplacementDecision`), those
            with ``switched`` set changed the plan.
        num_fast_forwarded: of ``num_steps``, those run by fast-forward.
    """

    system: str
    plan: PlacementPlan
    records: tuple[RequestRecord, ...]
    num_steps: int
    busy_s: float
    num_preemptions: int
    makespan_s: float
    wall_s: float
    replacements: tuple[ReplacementDecision, ...] = ()
    num_fast_forwarded: int = 0

    @property
    def num_switches(self) -> int:
        return sum(d.switched for d in self.replacements)


def group_replica(group: GroupPlan, services: Sequence[ServiceLoad], cluster: ClusterSpec, system: SystemSpec,
                  scheduler: SchedulerConfig, avg_seq_len: float, replicas: Mapping[str, int],
                  start_s: float = 0.0) -> SimulatedReplica:
    """The simulated replica of one group: its services' weights, a unified KV pool of the
    group's memory left after them (:meth:`ClusterSpec.kv_bytes`), the roofline cost model
    of each architecture at the group's tensor-parallel degree, ``system``'s policy, a clock
    from ``start_s`` (s). MuxServe's ADBS gets each service's rate per replica (``services``
    rates over ``replicas``, the service's number of groups) and ``avg_seq_len`` (tokens)."""
    by_name = {s.name: s for s in services}
    tp = group.tensor_parallel_size
    svcs = [by_name[m] for m in group.models]
    models = [SimModel(s.name, s.arch.kv_spec, RooflineCostModel(s.arch.shape, cluster.spec, tp),
                       s.arch.weights_bytes, s.arch.max_model_len, s.arch.shape.vocab_size,
                       (s.arch.eos_token_id,)) for s in svcs]
    spec = ReplicaSpec(models=tuple(ReplicaModel(m.name, m.kv_spec, m.weights_bytes) for m in models),
                       kv_cache_bytes=cluster.kv_bytes(tp, [s.arch for s in svcs]), device="simulated",
                       scheduler=scheduler, scheduling_policy=system.scheduling_policy)
    options = {}
    if system.scheduling_policy == "seallm":
        # its online refit of a step-time model only feeds saved profiles (no decision reads
        # it) and the simulated step times come from the roofline model: skip the fits
        options = {"refit_every_steps": None}
    if system.scheduling_policy == "muxserve":
        options = {"rates": {s.name: s.rate / max(replicas.get(s.name, 1), 1) for s in svcs},
                   "avg_seq_len": avg_seq_len}
    return simulated_replica(spec, {m.name: m.cost_model for m in models}, {m.name: m for m in models},
                             start_s=start_s, policy=make_policy(system.scheduling_policy, options),
                             swap_bandwidth=cluster.spec.host_link_bandwidth)


def simulate_cluster(requests: Sequence[BenchRequest], plan: PlacementPlan, cluster: ClusterSpec,
                     services: Sequence[ServiceLoad], system: SystemSpec,
                     scheduler: SchedulerConfig | None = None, max_steps: int = 200_000_000,
                     replacement: ReplacementConfig | None = None, fast_forward: bool = True) -> ClusterRun:
    """Serve ``requests`` on the groups of ``plan`` with ``system``'s policy and routing,
    each non-empty group one :func:`group_replica`.

    ``fast_forward``: run steady decode batches in one go (:mod:`seallm.sim.fastforward`;
    identical results, False: step by step).

    ``replacement``: re-place while serving (:mod:`seallm.cluster.replacement`; the system's
    own placement algorithm on the rates the replanner measures; switches as in
    :mod:`seallm.sim.replacement`). None or mode ``none``: the plan serves throughout.

    Raises:
        ValueError: a service of a request placed nowhere, or as
            :func:`~seallm.sim.device.serve_replicas`.
    """
    scheduler = scheduler or DEFAULT_SCHEDULER
    seq_len = sum(r.input_len + r.output_len for r in requests) / max(len(requests), 1)

    def build(g: GroupPlan, loads: Sequence[ServiceLoad], start_s: float, p: PlacementPlan) -> SimulatedReplica:
        counts = {s.name: len(p.replicas_of(s.name)) for s in loads}
        return group_replica(g, loads, cluster, system, scheduler, seq_len, counts, start_s)

    groups = [g for g in plan.groups if g.models]
    reps = [build(g, services, 0.0, plan) for g in groups]
    served = [frozenset(g.models) for g in groups]
    missing = sorted({r.model for r in requests} - set().union(*served))
    if missing:
        raise ValueError(f"services {missing} are not placed on any group")
    driver = None
    if replacement is not None and replacement.mode != "none":
        chunk = scheduler.max_num_batched_tokens
        reassign = None
        if system.placement == "seallm":
            reassign = lambda loads, cur: place_on_groups(loads, cluster, cur, chunk_tokens=chunk)  # noqa: E731
        replanner = Replanner(replacement, cluster, services, plan,
                              lambda loads: PLACEMENTS[system.placement](loads, cluster, chunk_tokens=chunk), chunk,
                              reassign)
        driver = ReplacementDriver(replanner, groups,
                                   lambda g, loads, start: build(g, loads, start, replanner.plan))
    t0 = time.perf_counter()
    arrived, token_times, finish, refused = serve_replicas(requests, reps, set().union(*served),
                                                           Router(system.routing_policy), max_steps, served, driver,
                                                           fast_forward)
    wall = time.perf_counter() - t0
    return ClusterRun(system.name, plan, records_of(requests, arrived, token_times, finish, refused),
                      sum(r.core.num_steps for r in reps), sum(r.core.executor.busy_s for r in reps),
                      sum(r.core.scheduler.num_preemptions for r in reps), max(r.now for r in reps), wall,
                      tuple(driver.replanner.decisions) if driver else (),
                      sum(r.fast_forwarded_steps for r in reps))


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
