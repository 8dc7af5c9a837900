"""Exact fast-forward of steady decode iterations (torch-free).

Most simulated iterations are decode steps of batches that do not change: every request of
the device running and decoding, one token each, nothing waiting, no request finishing;
each iteration runs all requests of the model the policy picks. Such iterations need no
planning: the policy says until when its decisions stay this simple
(:meth:`SchedulingPolicy.steady_decode_until`), only context lengths grow, so each
iteration's shape and hence its cost-model time are known. This module runs them in a tight
loop and applies exactly what the step-by-step loop would: the policy's model turns
(``model_order``), the same clock additions in the same order, the same busy time, tokens,
token times and pages, the same policy (:meth:`SchedulingPolicy.on_decode_run`) and
residency updates. Results are identical to step-by-step simulation
(``tests/sim/test_fastforward.py`` compares them request by request); what is skipped is the
per-iteration overhead of scheduling, plan objects, deltas and the event loop.

The caller bounds a run by a time ``horizon``: the first iteration starting at or after it
is left to the normal path (the next arrival, a replacement check, or another replica's
output that could reach this one). A run also stops before an iteration in which a request
would finish or would need a page that is not free.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from seallm.core import Request
from seallm.cost import BatchShape
from seallm.sim.replica import SimulatedReplica

@dataclass(frozen=True)
class DecodeRun:
    """Iterations a fast-forward ran: per model, its batch (``batches``) and the end of
    each of its iterations (``end_times``, s); every request of a batch sampled one token
    at each of its model's end times."""

    batches: dict[str, tuple[Request, ...]]
    end_times: dict[str, list[float]]

    @property
    def num_steps(self) -> int:
        return sum(len(t) for t in self.end_times.values())


def fast_forward(rep: SimulatedReplica, horizon: float = math.inf, max_steps: int = 1 << 62) -> DecodeRun | None:
    """Run ``rep``'s next iterations without plans while the device is in a steady decode
    state (:meth:`Scheduler.steady_decode`), each starting before ``horizon`` (s), at most
    ``max_steps``; None (nothing done) when the next iteration is not such a one.

    The replica sends no deltas for these iterations: the caller records their tokens.
    """
    core = rep.core
    if not rep.quiet():
        return None
    rm, ex, sched = core.residency, core.executor, core.scheduler
    if rm is not None and not rm.quiet():
        return None
    if ex.next_load_done() is not None:
        return None
    batches = sched.steady_decode()
    if batches is None:
        return None
    policy = sched.policy
    now = rep.now
    until = policy.steady_decode_until(batches, now)
    if until is None:
        return None
    horizon = min(horizon, until)
    kv, token = sched.kv, ex.token_id
    single = next(iter(batches)) if len(batches) == 1 else None
    left = {m: [sched.decode_steps_left(r, token) for r in rs] for m, rs in batches.items()}
    room = {m: [kv.num_pages_of(r.request_id) * kv.tokens_per_page(m) for r in rs] for m, rs in batches.items()}
    tpp = {m: kv.tokens_per_page(m) for m in batches}
    ctx = {m: sum(r.num_computed_tokens + 1 for r in rs) for m, rs in batches.items()}  # KV read, next iteration
    free = kv.pool.num_free
    clock, cost = rep.clock, ex.iteration_time
    ends: dict[str, list[float]] = {m: [] for m in batches}
    times: list[float] = []  # one model: its step times and shapes, for one on_decode_run
    shapes: list[BatchShape] = []
    t, steps = now, 0
    while steps < max_steps and t < horizon:
        m = single if single is not None else policy.model_order(batches, t)[0]
        reqs, lf, rooms = batches[m], left[m], room[m]
        if min(lf) == 0:
            break  # a request finishes in this iteration: the normal path
        grow = [i for i, r in enumerate(reqs) if r.num_computed_tokens + 1 > rooms[i]]
        if len(grow) > free:
            break  # it needs pages that are not free: the normal path preempts
        free -= len(grow)
        for i in grow:
            rooms[i] += tpp[m]
        for i in range(len(lf)):
            lf[i] -= 1
        b = len(reqs)
        # BatchShape.of a plan of b decode chunks: b tokens, sampled rows and sequences; the
        # query-key pairs equal the context (one per context token)
        shape = BatchShape(b, ctx[m], b, b, ctx[m])
        ctx[m] += b
        dt = cost(m, shape)
        ex.busy_s += dt  # as execute (no page copies)
        clock.advance(dt)  # as ReplicaCore.elapse
        t = clock.now()
        if rm is not None:
            rm.on_run(m, t, dt, b)
        sched.decode_step(reqs, token, t)
        ends[m].append(t)
        steps += 1
        if single is None:
            policy.on_decode_run(m, reqs, (dt,), (t,), (shape,))
        else:
            times.append(dt)
            shapes.append(shape)
    if steps == 0:
        return None
    if single is not None:
        policy.on_decode_run(single, batches[single], times, ends[single], shapes)
    ran = {m: tuple(rs) for m, rs in batches.items() if ends[m]}
    for rs in ran.values():
        sched.settle_decode(list(rs))
        rep.loop.mark_sent(list(rs))
    core.num_steps += steps
    rep.fast_forwarded_steps += steps
    return DecodeRun(ran, {m: ends[m] for m in ran})
