"""Exact fast-forward of steady decode batches (torch-free).

Most simulated iterations are decode steps of a batch that does not change: the same
requests of one model, one token each, nothing waiting, no request finishing. Such a run of
iterations is decided in advance: the scheduler would plan the same batch every time (the
policy says until when, :meth:`SchedulingPolicy.steady_decode_until`), only the context
lengths grow, so each iteration's shape and hence its cost-model time are known. This
module runs the whole run in one go and applies exactly what the step-by-step loop would:
the same clock additions in the same order, the same busy time, the same pages, tokens and
token times, the same policy and residency updates. Results are identical to step-by-step
simulation (``tests/sim/test_fastforward.py`` compares them request by request); only the
per-iteration overhead of planning, plan objects, deltas and the event loop is skipped.

The caller bounds the run by a time ``horizon``: the first step starting at or after it is
left to the normal path (the next arrival, a replacement check, or another replica's
output that could reach this one).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from seallm.core import Request
from seallm.cost import BatchShape
from seallm.sim.replica import SimulatedReplica

#: Shortest run worth fast-forwarding (iterations); shorter runs take the normal path.
MIN_RUN = 2


@dataclass(frozen=True)
class DecodeRun:
    """Iterations a fast-forward ran: their batch (``requests``) and each one's end (s)."""

    requests: tuple[Request, ...]
    end_times: tuple[float, ...]


def fast_forward(rep: SimulatedReplica, horizon: float = math.inf, max_steps: int = 1 << 62) -> DecodeRun | None:
    """Run ``rep``'s next iterations in one go while they form a steady decode batch
    (:meth:`Scheduler.steady_decode`), start before ``horizon`` (s) and stay within
    ``max_steps``; None (nothing done) when the next iteration is not one, or the run would
    be shorter than :data:`MIN_RUN`.

    Every iteration of the run samples one token per request at its end time; the caller
    records them (the replica sends no deltas for them).
    """
    core = rep.core
    if not rep.quiet():
        return None
    rm, ex, sched = core.residency, core.executor, core.scheduler
    if rm is not None and not rm.quiet():
        return None
    if ex.next_load_done() is not None:
        return None
    steady = sched.steady_decode()
    if steady is None:
        return None
    model, reqs = steady
    now = rep.now
    until = sched.policy.steady_decode_until(model, reqs, now)
    if until is None:
        return None
    horizon = min(horizon, until)
    k_max = min(sched.decode_run_limit(model, reqs, ex.token_id), max_steps)
    if k_max < MIN_RUN or now >= horizon:
        return None
    b = len(reqs)
    ctx = sum(r.num_computed_tokens + 1 for r in reqs)  # KV tokens read by the first iteration
    clock, cost = rep.clock, ex.iteration_time
    times: list[float] = []
    ends: list[float] = []
    shapes: list[BatchShape] = []
    t = now
    while len(ends) < k_max and t < horizon:
        # BatchShape.of a plan of b decode chunks: b tokens, sampled rows and sequences; the
        # context (and the query-key pairs, one per context token) grows by b per iteration
        shape = BatchShape(b, ctx, b, b, ctx)
        dt = cost(model, shape)
        ex.busy_s += dt  # as execute (no page copies)
        clock.advance(dt)  # as ReplicaCore.elapse
        t = clock.now()
        if rm is not None:
            rm.on_run(model, t, dt, b)
        times.append(dt)
        ends.append(t)
        shapes.append(shape)
        ctx += b
    k = len(ends)
    core.num_steps += k
    rep.fast_forwarded_steps += k
    sched.apply_decode_run(model, reqs, k, ex.token_id, ends[0])
    sched.policy.on_decode_run(model, reqs, times, ends, shapes)
    rep.loop.mark_sent(reqs)
    return DecodeRun(tuple(reqs), tuple(ends))
