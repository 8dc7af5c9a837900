"""Discrete-event simulation of one device: the real engine loop, scheduler and policy, a
cost-model executor.

The device is a :class:`~seallm.sim.replica.SimulatedReplica`: the replica that
:func:`~seallm.engine.replica.build_replica` builds from a :class:`ReplicaSpec`, driven
through its handle with the same ``AddRequest`` messages the server sends, so requests are
built and checked by the one request constructor (:mod:`seallm.engine.requests`). Only time
is simulated: requests arrive at their workload times, the clock jumps over idle gaps, and
every emitted token is time-stamped, so the result is the same
:class:`~seallm.bench.records.RequestRecord` list the load client produces against a live
server and goes through the same metrics.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from seallm.bench.records import RequestRecord
from seallm.bench.workload import BenchRequest
from seallm.core import SamplingParams
from seallm.cost import CostModel
from seallm.engine.messages import AddRequest
from seallm.engine.replica import ReplicaModel, ReplicaSpec
from seallm.kv import KVSpec
from seallm.sched import SchedulerConfig, SchedulingPolicy
from seallm.cluster.router import ReplicaView, Router
from seallm.sim.fastforward import fast_forward as fast_forward_run
from seallm.sim.replacement import ReplacementDriver
from seallm.sim.replica import SimulatedReplica, simulated_replica


@dataclass(frozen=True)
class SimModel:
    """One model of the simulated device: its KV shape, its step-time model, and what the
    request constructor checks (``max_model_len``, ``vocab_size``, ``eos_token_ids``).

    ``weights_bytes``: bytes of its weights (simulated load time; 0: loads take no time).
    ``pinned``: never unloaded (with ``max_resident_models``).
    """

    name: str
    kv_spec: KVSpec
    cost_model: CostModel
    weights_bytes: int = 0
    max_model_len: int = 1 << 30
    vocab_size: int = 32000
    eos_token_ids: tuple[int, ...] = ()
    pinned: bool = False


@dataclass(frozen=True)
class DeviceResult:
    """What one simulated device did.

    Attributes:
        records: one per workload request, in workload order (times in s from the start).
        num_steps: iterations run. busy_s: seconds the device computed (s).
        num_preemptions: requests that lost their KV pages. num_swap_outs: of them, swapped.
        makespan_s: time of the last event (s). num_loads: model loads (residency).
        num_fast_forwarded: of ``num_steps``, those run by fast-forward.
    """

    records: tuple[RequestRecord, ...]
    num_steps: int
    busy_s: float
    num_preemptions: int
    makespan_s: float
    num_swap_outs: int = 0
    num_loads: int = 0
    num_fast_forwarded: int = 0


def simulate_device(
    requests: Sequence[BenchRequest],
    models: Sequence[SimModel],
    policy: SchedulingPolicy,
    kv_pages: int,
    page_size_bytes: int,
    scheduler_config: SchedulerConfig | None = None,
    swap_pages: int = 0,
    swap_bandwidth: float = 25e9,
    max_steps: int = 50_000_000,
    max_resident_models: int | None = None,
    weights_memory_bytes: int | None = None,
    residency_policy: str = "seallm",
    residency_preempt_after: float | None = 1.0,
    disk_bandwidth: float = 2e9,
    host_cache_bandwidth: float = 25e9,
    fast_forward: bool = True,
    ingest_delay_s: Mapping[str, float] | None = None,
) -> DeviceResult:
    """Serve ``requests`` on one simulated device and record every token's time.

    Prompts are ``input_len`` copies of a token id; each request asks for exactly
    ``output_len`` tokens (``ignore_eos``), as the load client does. A request with ``after``
    set (the next round of a tool-calling chain) arrives ``tool_delay_s`` after the request it
    follows finishes (or is refused). ``swap_pages`` host
    pages back swap preemption (``scheduler_config.preemption_mode="swap"``); copies take
    ``swap_bandwidth`` bytes/s. ``max_resident_models`` / ``weights_memory_bytes`` /
    ``residency_policy`` / ``residency_preempt_after`` hold fewer models than ``models`` on the device at once (as in a
    deployment file); a load takes ``weights_bytes / disk_bandwidth`` the first time and
    ``weights_bytes / host_cache_bandwidth`` from the host weight cache after that (s).
    ``fast_forward``: run steady decode batches in one go (:mod:`seallm.sim.fastforward`;
    identical results; False: step by step). ``ingest_delay_s``: per model, seconds from a
    request's send to the engine's queue (a live server's front end and IPC, measured by
    the engine into the service profiles); latencies count from the send.

    A request the replica refuses (a prompt over the model's context length, one that cannot
    fit in the whole KV pool) fails alone, as a live server answers it with HTTP 400: its
    record has ``error`` set and no tokens.

    Raises:
        ValueError: a request of a model not in ``models``, or ``max_steps`` exceeded.
    """
    return simulate_replicas(requests, models, lambda: policy, 1, kv_pages, page_size_bytes, scheduler_config,
                             max_steps=max_steps, swap_pages=swap_pages, swap_bandwidth=swap_bandwidth,
                             max_resident_models=max_resident_models, weights_memory_bytes=weights_memory_bytes,
                             residency_policy=residency_policy, residency_preempt_after=residency_preempt_after,
                             disk_bandwidth=disk_bandwidth, host_cache_bandwidth=host_cache_bandwidth,
                             fast_forward=fast_forward, ingest_delay_s=ingest_delay_s)


def simulate_replicas(
    requests: Sequence[BenchRequest],
    models: Sequence[SimModel],
    policy_factory: Callable[[], SchedulingPolicy],
    num_replicas: int,
    kv_pages: int,
    page_size_bytes: int,
    scheduler_config: SchedulerConfig | None = None,
    routing_policy: str = "round_robin",
    max_steps: int = 50_000_000,
    swap_pages: int = 0,
    swap_bandwidth: float = 25e9,
    max_resident_models: int | None = None,
    weights_memory_bytes: int | None = None,
    residency_policy: str = "seallm",
    residency_preempt_after: float | None = 1.0,
    disk_bandwidth: float = 2e9,
    host_cache_bandwidth: float = 25e9,
    fast_forward: bool = True,
    ingest_delay_s: Mapping[str, float] | None = None,
) -> DeviceResult:
    """Serve ``requests`` on ``num_replicas`` identical simulated replicas (each its own KV
    pool of ``kv_pages`` pages, its own policy from ``policy_factory``, and the device
    options of :func:`simulate_device`) behind a :class:`~seallm.cluster.router.Router` with
    ``routing_policy`` (``slo``: try-then-forward on the replicas' SLO planners).

    Returns:
        The records and the totals over the replicas (steps, busy seconds, preemptions,
        swap-outs, loads); ``makespan_s`` is the latest replica clock.

    Raises:
        ValueError: fewer than one replica, an unknown routing policy, or as
            :func:`simulate_device`.
    """
    if num_replicas < 1:
        raise ValueError(f"num_replicas must be >= 1, got {num_replicas}")
    router = Router(routing_policy)
    spec = ReplicaSpec(models=tuple(ReplicaModel(m.name, m.kv_spec, m.weights_bytes, m.pinned) for m in models),
                       kv_cache_bytes=kv_pages * page_size_bytes, device="simulated", page_size_bytes=page_size_bytes,
                       swap_space_bytes=swap_pages * page_size_bytes, scheduler=scheduler_config or SchedulerConfig(),
                       max_resident_models=max_resident_models, weights_memory_bytes=weights_memory_bytes,
                       residency_policy=residency_policy, residency_preempt_after=residency_preempt_after)
    reps = [simulated_replica(spec, {m.name: m.cost_model for m in models}, {m.name: m for m in models},
                              policy=policy_factory(), swap_bandwidth=swap_bandwidth, disk_bandwidth=disk_bandwidth,
                              host_cache_bandwidth=host_cache_bandwidth) for _ in range(num_replicas)]
    known = {m.name for m in models}
    arrived, token_times, finish, refused = serve_replicas(requests, reps, known, router, max_steps,
                                                           fast_forward=fast_forward, ingest_delay_s=ingest_delay_s)
    return DeviceResult(records_of(requests, arrived, token_times, finish, refused),
                        sum(r.core.num_steps for r in reps), sum(r.core.executor.busy_s for r in reps),
                        sum(r.core.scheduler.num_preemptions for r in reps), max(r.now for r in reps),
                        sum(r.core.scheduler.num_swap_outs for r in reps),
                        num_loads=sum(r.core.executor.num_loads for r in reps),
                        num_fast_forwarded=sum(r.fast_forwarded_steps for r in reps))


def records_of(requests: Sequence[BenchRequest], arrived: dict[str, float], token_times: dict[str, list[float]],
               finish: dict[str, tuple[float, str, str | None]], refused: dict[str, str]) -> tuple[RequestRecord, ...]:
    """One :class:`RequestRecord` per workload request, in workload order, from what
    :func:`serve_replicas` observed.

    Raises:
        ValueError: a later round of a chain that never arrived.
    """
    recs = []
    for i, b in enumerate(requests):
        rid = str(i)
        t_arr = arrived.get(rid)
        if t_arr is None:  # a later round of a chain whose earlier round never finished
            raise ValueError(f"request {i} never arrived: the request it follows ({b.after}) did not finish")
        if rid in refused:
            recs.append(RequestRecord(index=i, model=b.model, input_len=b.input_len, output_len=b.output_len,
                                      scheduled_s=t_arr, sent_s=t_arr, error=refused[rid]))
            continue
        times = token_times.get(rid, [])
        end, reason, admission = finish[rid]
        recs.append(RequestRecord(index=i, model=b.model, input_len=b.input_len, output_len=b.output_len,
                                  scheduled_s=t_arr, sent_s=t_arr, first_token_s=times[0],
                                  finish_s=end, tokens_in=b.input_len, tokens_out=len(times),
                                  token_times_s=tuple(times), finish_reason=reason, admission=admission))
    return tuple(recs)


def serve_replicas(requests: Sequence[BenchRequest], replicas: list[SimulatedReplica], known: set[str],
                   router: Router | None = None, max_steps: int = 50_000_000,
                   models_of: Sequence[frozenset[str]] | None = None, driver: ReplacementDriver | None = None,
                   fast_forward: bool = True, ingest_delay_s: Mapping[str, float] | None = None):
    """Drive simulated replicas through a workload by events, as a front end drives live ones.

    The replica furthest behind in simulated time steps next; an arrival is delivered once
    every replica with work has reached its time. Each request goes to the replicas of
    ``router.try_order`` (None: the first replica) in turn: every try but the last asks for
    ``admission_mode="reject"``, and a refusal (HTTP 429) forwards the request to the next
    replica at the time of the refusal (SLOs-Serve's try-then-forward, §1.11). A request with
    ``after`` set arrives ``tool_delay_s`` after the request it follows finishes (or fails).

    Returns:
        ``(arrived, token_times, finish, refused)`` keyed by request id (the workload index
        as a string): arrival time (s), every token's time (s), ``(finish time, reason,
        admission)``, and the error of a request that failed on its last try.

    ``models_of``: per replica, the models it serves (default: every replica serves all of
    ``known``); the router only picks among the replicas that serve a request's model.

    ``driver``: adaptive replacement (:mod:`seallm.sim.replacement`): it sees every arrival
    and, at its check times while arrivals remain, may switch plans; replicas that retire
    stop after their iteration under way and their unfinished requests migrate through the
    router (recomputed: the prompt plus the tokens generated, for the tokens still owed);
    new replicas are appended to ``replicas`` and start after their weights load. A
    replica not started yet is routed to only when no started one serves the model.

    ``fast_forward``: run steady decode batches in one go (:mod:`seallm.sim.fastforward`),
    up to the next event that could reach the replica (the next arrival or replacement
    check; with chained or forwarded requests, also the next step of any other replica);
    the results are identical to step-by-step (False).

    ``ingest_delay_s``: per model, seconds from a request's send to its delivery to a
    replica (the front end); its arrival time (and so its latencies) stays the send.

    Raises:
        ValueError: a request of an unknown model or following an unknown request, a stall,
            or more than ``max_steps`` iterations.
    """
    followers: dict[int, list[int]] = {}
    for i, b in enumerate(requests):
        if b.model not in known:
            raise ValueError(f"model {b.model!r} is not served by the simulated device: {sorted(known)}")
        if b.after is not None:
            if not 0 <= b.after < len(requests) or b.after == i:
                raise ValueError(f"request {i} follows request {b.after}, which is not in the workload")
            followers.setdefault(b.after, []).append(i)
    delay = dict(ingest_delay_s or {})
    sent: dict[int, float] = {i: b.arrival_s for i, b in enumerate(requests) if b.after is None}
    # (delivery time, tie-break, workload index, try number)
    arrivals = [(b.arrival_s + delay.get(b.model, 0.0), i, i, 0) for i, b in enumerate(requests) if b.after is None]
    heapq.heapify(arrivals)
    tries: dict[int, list[int]] = {}
    arrived: dict[str, float] = {}
    token_times: dict[str, list[float]] = {}
    finish: dict[str, tuple[float, str, str | None]] = {}
    refused: dict[str, str] = {}
    where: dict[str, int] = {}  # request id -> try number now
    seq = len(requests)

    def push(t: float, i: int, k: int) -> None:  # sent at t (a first try passes the front end)
        nonlocal seq
        seq += 1
        sent.setdefault(i, t)
        heapq.heappush(arrivals, (t + delay.get(requests[i].model, 0.0) if k == 0 else t, seq, i, k))

    def done(rid: str, t: float) -> None:  # the next rounds of its chain arrive after the tool delay
        for j in followers.get(int(rid), ()):
            push(t + requests[j].tool_delay_s, j, 0)

    served = list(models_of) if models_of is not None else [frozenset(known)] * len(replicas)
    if len(served) != len(replicas):
        raise ValueError(f"models_of has {len(served)} entries for {len(replicas)} replicas")
    alive = [True] * len(replicas)
    ready_at = [rep.now for rep in replicas]  # when each replica's weights are on its devices
    on: dict[str, int] = {}  # unfinished request id -> the replica serving it

    def views(t: float) -> list[ReplicaView]:
        return [ReplicaView(str(n), served[n], served[n] if ready_at[n] <= t else frozenset(), alive[n],
                            rep.core.scheduler.num_running() + rep.core.scheduler.num_waiting())
                for n, rep in enumerate(replicas)]

    # each replica's next event time, kept in a heap with stale entries skipped: only the
    # replica that stepped or was handed a request can change its time
    nxt: list[float | None] = [rep.next_event_time() for rep in replicas]
    events = [(t, n) for n, t in enumerate(nxt) if t is not None]
    heapq.heapify(events)

    def refresh(n: int) -> None:
        t = nxt[n] = replicas[n].next_event_time()
        if t is not None:
            heapq.heappush(events, (t, n))

    chains = bool(followers)
    forwards = False  # some request has more than one replica to try (429s are forwarded)

    def horizon(n: int) -> float:
        """Before when replica ``n`` may run iterations without looking at anything else."""
        h = arrivals[0][0] if arrivals else math.inf
        if driver is not None and arrivals:
            h = min(h, driver.next_check_s)
        if chains or forwards:  # another replica's output could bring an arrival earlier
            h = min([h] + [t for m, t in enumerate(nxt) if m != n and t is not None])
        return h

    while True:
        while events and events[0][0] != nxt[events[0][1]]:
            heapq.heappop(events)  # stale
        t_rep, n = events[0] if events else (None, None)
        if driver is not None and arrivals and driver.next_check_s <= min(arrivals[0][0], math.inf if t_rep is None
                                                                            else t_rep):
            t_chk = driver.next_check_s
            switch = driver.check(t_chk)
            if switch is not None:
                stop = {}
                for m in switch.retire:
                    stop[m] = max(t_chk, replicas[m].now)  # its iteration under way ends first
                    alive[m], nxt[m] = False, None
                    for rid in [r for r, where_n in on.items() if where_n == m]:
                        del on[rid]
                        push(stop[m], int(rid), 0)  # migrates: routed again, keeps its tokens
                for new in switch.add:
                    start = max([t_chk] + [stop[m] for m in new.blocked_by]) + new.load_s
                    replicas.append(new.build(start))
                    served.append(new.models)
                    alive.append(True)
                    ready_at.append(start)
                    nxt.append(None)
                    refresh(len(replicas) - 1)
            continue
        if arrivals and (t_rep is None or arrivals[0][0] <= t_rep):
            t_arr, _, i, k = heapq.heappop(arrivals)
            b = requests[i]
            rid = str(i)
            if k == 0:
                tries[i] = [0] if router is None else router.try_order(b.model, views(t_arr))
                if not tries[i]:
                    raise ValueError(f"no replica serves model {b.model!r}")
                forwards = forwards or len(tries[i]) > 1
                if rid not in arrived:  # not a migration
                    arrived[rid] = sent[i]
                    token_times[rid] = []
                    if driver is not None:
                        driver.observe(b.model, sent[i], b.input_len, b.output_len)
            order = tries[i]
            rep = replicas[order[k]]
            rep.advance_to(t_arr)  # behind only when it had nothing to run until now
            where[rid] = k
            on[rid] = order[k]
            done_tokens = len(token_times[rid])
            rep.submit(AddRequest(rid, b.model, [5] * (b.input_len + done_tokens),
                                  SamplingParams(max_tokens=b.output_len - done_tokens, ignore_eos=True,
                                                 temperature=0.0),
                                  arrived[rid], slo=b.slo, admission_mode=None if k == len(order) - 1 else "reject"))
            refresh(order[k])
            continue
        if t_rep is None:
            if any(alive[n] and rep.core.has_unfinished() for n, rep in enumerate(replicas)):
                raise ValueError("simulation stalled: requests left but nothing can run")
            break
        rep = replicas[n]
        if t_rep > rep.now:  # only a load under way: jump to its end
            rep.advance_to(t_rep)
        if fast_forward:
            run = fast_forward_run(rep, horizon(n), max_steps + 1 - rep.core.num_steps)
            if run is not None:
                for m, rs in run.batches.items():
                    for r in rs:
                        token_times[r.request_id].extend(run.end_times[m])
                refresh(n)
                if rep.core.num_steps > max_steps:
                    raise ValueError(f"simulation exceeded {max_steps} iterations")
                continue
        rep.step()
        refresh(n)
        t = rep.now
        for out in rep.outputs():
            for d in out.deltas:
                rid = d.request_id
                if d.error is not None:  # refused, as the server answers 4xx: the request fails alone
                    i = int(rid)
                    if d.error_status == 429 and where[rid] < len(tries[i]) - 1:
                        push(t, i, where[rid] + 1)  # try-then-forward
                        continue
                    refused[rid] = f"HTTP {d.error_status}: {d.error}"
                    on.pop(rid, None)
                    done(rid, t)
                    continue
                if d.token_ids:
                    token_times[rid].extend([t] * len(d.token_ids))
                if d.finish_reason is not None:
                    finish[rid] = (t, d.finish_reason, d.admission)
                    on.pop(rid, None)
                    done(rid, t)
        if rep.core.num_steps > max_steps:
            raise ValueError(f"simulation exceeded {max_steps} iterations")
    return arrived, token_times, finish, refused
