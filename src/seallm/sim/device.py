"""Discrete-event simulation of one device: the real scheduler and policy, a cost-model executor.

The loop is the engine's (:class:`~seallm.engine.core.ReplicaCore`: schedule -> execute ->
update); only time is simulated. Requests arrive at their workload times, the clock jumps
over idle gaps, and every emitted token is time-stamped, so the result is the same
:class:`~seallm.bench.records.RequestRecord` list the load client produces against a live
server and goes through the same metrics.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from seallm.bench.records import RequestRecord
from seallm.bench.workload import BenchRequest
from seallm.core import ManualClock, Request, SamplingParams
from seallm.cost import CostModel
from seallm.engine.replica import ReplicaModel, ReplicaSpec, build_replica
from seallm.kv import KVSpec
from seallm.sched import SchedulerConfig, SchedulingPolicy
from seallm.sim.executor import CostModelExecutor


@dataclass(frozen=True)
class SimModel:
    """One resident model of the simulated device: its KV shape and its step-time model."""

    name: str
    kv_spec: KVSpec
    cost_model: CostModel


@dataclass(frozen=True)
class DeviceResult:
    """What one simulated device did.

    Attributes:
        records: one per workload request, in workload order (times in s from the start).
        num_steps: iterations run. busy_s: seconds the device computed (s).
        num_preemptions: requests that lost their KV pages. num_swap_outs: of them, swapped.
        makespan_s: time of the last event (s).
    """

    records: tuple[RequestRecord, ...]
    num_steps: int
    busy_s: float
    num_preemptions: int
    makespan_s: float
    num_swap_outs: int = 0


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
) -> DeviceResult:
    """Serve ``requests`` on one simulated device and record every token's time.

    Prompts are ``input_len`` copies of a token id; each request asks for exactly
    ``output_len`` tokens (``ignore_eos``), as the load client does. ``swap_pages`` host
    pages back swap preemption (``scheduler_config.preemption_mode="swap"``); copies take
    ``swap_bandwidth`` bytes/s.

    Raises:
        ValueError: a request of a model not in ``models`` or one that cannot fit in the
            whole KV pool (the scheduler's own check), or ``max_steps`` exceeded.
    """
    clock = ManualClock(0.0)
    spec = ReplicaSpec(models=tuple(ReplicaModel(m.name, m.kv_spec) for m in models),
                       kv_cache_bytes=kv_pages * page_size_bytes, device="simulated", page_size_bytes=page_size_bytes,
                       swap_space_bytes=swap_pages * page_size_bytes, scheduler=scheduler_config or SchedulerConfig())
    costs = {m.name: m.cost_model for m in models}
    replica = build_replica(spec, lambda layout: CostModelExecutor(costs, clock, layout.page_size_bytes,
                                                                   swap_bandwidth), clock, policy=policy)
    core, scheduler, executor = replica.core, replica.scheduler, replica.core.executor

    order = sorted(range(len(requests)), key=lambda i: requests[i].arrival_s)
    token_times: dict[str, list[float]] = {}
    finish: dict[str, tuple[float, str]] = {}
    nxt = 0
    while nxt < len(order) or core.has_unfinished():
        now = clock.now()
        while nxt < len(order) and requests[order[nxt]].arrival_s <= now:
            i = order[nxt]
            b = requests[i]
            rid = str(i)
            core.add_request(Request(rid, b.model, [5] * b.input_len,
                                     SamplingParams(max_tokens=b.output_len, ignore_eos=True, temperature=0.0),
                                     arrival_time=b.arrival_s))
            token_times[rid] = []
            nxt += 1
        emitted = core.step() if core.has_unfinished() else []
        for r in emitted:
            token_times[r.request_id].append(clock.now())
            if r.is_finished:
                finish[r.request_id] = (clock.now(), str(r.finish_reason))
        if core.num_steps > max_steps:
            raise ValueError(f"simulation exceeded {max_steps} iterations")
        if clock.now() == now:  # nothing ran: jump to the next arrival or finished load
            events = [t for t in (executor.next_load_done(),
                                  requests[order[nxt]].arrival_s if nxt < len(order) else None) if t is not None]
            if not events:
                if core.has_unfinished():
                    raise ValueError("simulation stalled: requests left but nothing can run")
                break
            clock.advance(max(0.0, min(events) - now))

    recs = []
    for i, b in enumerate(requests):
        rid = str(i)
        times = token_times.get(rid, [])
        end, reason = finish[rid]
        recs.append(RequestRecord(index=i, model=b.model, input_len=b.input_len, output_len=b.output_len,
                                  scheduled_s=b.arrival_s, sent_s=b.arrival_s, first_token_s=times[0],
                                  finish_s=end, tokens_in=b.input_len, tokens_out=len(times),
                                  token_times_s=tuple(times), finish_reason=reason))
    return DeviceResult(tuple(recs), core.num_steps, executor.busy_s, scheduler.num_preemptions, clock.now(),
                        scheduler.num_swap_outs)
