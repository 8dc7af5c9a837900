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
from collections.abc import Sequence
from dataclasses import dataclass

from seallm.bench.records import RequestRecord
from seallm.bench.workload import BenchRequest
from seallm.core import SamplingParams
from seallm.cost import CostModel
from seallm.engine.messages import AddRequest
from seallm.engine.replica import ReplicaModel, ReplicaSpec
from seallm.kv import KVSpec
from seallm.sched import SchedulerConfig, SchedulingPolicy
from seallm.sim.replica import simulated_replica


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
    """

    records: tuple[RequestRecord, ...]
    num_steps: int
    busy_s: float
    num_preemptions: int
    makespan_s: float
    num_swap_outs: int = 0
    num_loads: int = 0


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

    A request the replica refuses (a prompt over the model's context length, one that cannot
    fit in the whole KV pool) fails alone, as a live server answers it with HTTP 400: its
    record has ``error`` set and no tokens.

    Raises:
        ValueError: a request of a model not in ``models``, or ``max_steps`` exceeded.
    """
    spec = ReplicaSpec(models=tuple(ReplicaModel(m.name, m.kv_spec, m.weights_bytes, m.pinned) for m in models),
                       kv_cache_bytes=kv_pages * page_size_bytes, device="simulated", page_size_bytes=page_size_bytes,
                       swap_space_bytes=swap_pages * page_size_bytes, scheduler=scheduler_config or SchedulerConfig(),
                       max_resident_models=max_resident_models, weights_memory_bytes=weights_memory_bytes,
                       residency_policy=residency_policy, residency_preempt_after=residency_preempt_after)
    replica = simulated_replica(spec, {m.name: m.cost_model for m in models}, {m.name: m for m in models},
                                policy=policy,
                                swap_bandwidth=swap_bandwidth, disk_bandwidth=disk_bandwidth,
                                host_cache_bandwidth=host_cache_bandwidth)
    core = replica.core
    known = {m.name for m in models}

    followers: dict[int, list[int]] = {}
    for i, b in enumerate(requests):
        if b.model not in known:
            raise ValueError(f"model {b.model!r} is not served by the simulated device: {sorted(known)}")
        if b.after is not None:
            if not 0 <= b.after < len(requests) or b.after == i:
                raise ValueError(f"request {i} follows request {b.after}, which is not in the workload")
            followers.setdefault(b.after, []).append(i)
    arrivals = [(b.arrival_s, i) for i, b in enumerate(requests) if b.after is None]
    heapq.heapify(arrivals)
    arrived: dict[str, float] = {}
    token_times: dict[str, list[float]] = {}
    finish: dict[str, tuple[float, str, str | None]] = {}
    refused: dict[str, str] = {}

    def done(rid: str, t: float) -> None:  # the next rounds of its chain arrive after the tool delay
        for j in followers.get(int(rid), ()):
            heapq.heappush(arrivals, (t + requests[j].tool_delay_s, j))

    while arrivals or replica.has_work():
        now = replica.now
        while arrivals and arrivals[0][0] <= now:
            t_arr, i = heapq.heappop(arrivals)
            b = requests[i]
            rid = str(i)
            replica.submit(AddRequest(rid, b.model, [5] * b.input_len,
                                      SamplingParams(max_tokens=b.output_len, ignore_eos=True, temperature=0.0),
                                      t_arr, slo=b.slo))
            arrived[rid] = t_arr
            token_times[rid] = []
        replica.step()
        t = replica.now
        for out in replica.outputs():
            for d in out.deltas:
                if d.error is not None:  # refused, as the server answers 4xx: the request fails alone
                    refused[d.request_id] = f"HTTP {d.error_status}: {d.error}"
                    done(d.request_id, t)
                    continue
                if d.token_ids:
                    token_times[d.request_id].extend([t] * len(d.token_ids))
                if d.finish_reason is not None:
                    finish[d.request_id] = (t, d.finish_reason, d.admission)
                    done(d.request_id, t)
        if core.num_steps > max_steps:
            raise ValueError(f"simulation exceeded {max_steps} iterations")
        if t == now:  # nothing ran: jump to the next arrival or finished load
            events = [e for e in (replica.next_event_time(), arrivals[0][0] if arrivals else None) if e is not None]
            if not events:
                if core.has_unfinished():
                    raise ValueError("simulation stalled: requests left but nothing can run")
                break
            replica.advance_to(min(events))

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
    sched = core.scheduler
    return DeviceResult(tuple(recs), core.num_steps, core.executor.busy_s, sched.num_preemptions, replica.now,
                        sched.num_swap_outs, num_loads=core.executor.num_loads)
