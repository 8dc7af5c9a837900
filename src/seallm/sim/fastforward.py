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
    until = sched.policy.steady_decode_until(batches, rep.now)
    if until is None:
        return None
    horizon = min(horizon, until)
    if len(batches) == 1:
        ends = _one_model(rep, next(iter(batches.items())), horizon, max_steps)
    else:
        ends = _models(rep, batches, horizon, max_steps)
    if ends is None:
        return None
    ran = {m: tuple(rs) for m, rs in batches.items() if ends.get(m)}
    for m, rs in ran.items():
        sched.settle_decode(list(rs))
        rep.loop.mark_sent(list(rs))
    steps = sum(len(e) for e in ends.values())
    core.num_steps += steps
    rep.fast_forwarded_steps += steps
    return DecodeRun(ran, {m: ends[m] for m in ran})


#: Step times computed ahead at first (one model's run); later chunks are sized to the
#: horizon by the last step time (step times only grow with the context)
FIRST_CHUNK = 8
MAX_CHUNK = 256


def _one_model(rep: SimulatedReplica, batch: tuple[str, list[Request]], horizon: float,
               max_steps: int) -> dict[str, list[float]] | None:
    """One model's requests decode alone: the iterations are known up to the first finish,
    so step times come in chunks, pages are checked only at the steps where some request
    crosses into a new page, and the requests and the policy are updated once at the end."""
    m, reqs = batch
    core = rep.core
    rm, ex, sched, kv = core.residency, core.executor, core.scheduler, core.scheduler.kv
    token = ex.token_id
    limit = min(min(sched.decode_steps_left(r, token) for r in reqs), max_steps)
    if limit <= 0:
        return None
    b, tpp = len(reqs), kv.tokens_per_page(m)
    # step (from 1) at which each request grows into a page it does not hold yet
    need = [kv.num_pages_of(r.request_id) * tpp - r.num_computed_tokens + 1 for r in reqs]
    next_need = min(need)
    free = kv.pool.num_free
    ctx0 = sum(r.num_computed_tokens + 1 for r in reqs)  # KV tokens read by the first iteration
    clock = rep.clock
    t = clock.now()
    times: list[float] = []
    ends: list[float] = []
    j = 0  # iterations done
    blocked = False
    n = FIRST_CHUNK
    while j < limit and t < horizon and not blocked:
        for dt in ex.decode_times(m, b, ctx0 + j * b, min(n, limit - j)):
            if t >= horizon:
                break
            if j + 1 == next_need:
                grow = [i for i, n in enumerate(need) if n == next_need]
                if len(grow) > free:
                    blocked = True  # the normal path preempts
                    break
                free -= len(grow)
                for i in grow:
                    need[i] += tpp
                next_need = min(need)
            ex.busy_s += dt  # as execute (no page copies)
            clock.advance(dt)  # as ReplicaCore.elapse
            t = clock.now()
            if rm is not None:
                rm.on_run(m, t, dt, b)
            times.append(dt)
            ends.append(t)
            j += 1
        if times:
            n = min(MAX_CHUNK, int((horizon - t) / times[-1]) + 1) if horizon < math.inf else MAX_CHUNK
    if not j:
        return None
    sched.decode_steps(reqs, token, j, ends[0])
    sched.policy.on_decode_run(m, reqs, times, ends, range(ctx0, ctx0 + j * b, b))
    return {m: ends}


def _models(rep: SimulatedReplica, batches: dict[str, list[Request]], horizon: float,
            max_steps: int) -> dict[str, list[float]] | None:
    """Several models' requests decode, one model per iteration as ``model_order`` picks:
    iteration by iteration (the policy's state moves every iteration), with the requests
    updated once at the end (turns never depend on token counts or pages)."""
    core = rep.core
    rm, ex, sched, kv = core.residency, core.executor, core.scheduler, core.scheduler.kv
    policy, token = sched.policy, ex.token_id
    left = {m: min(sched.decode_steps_left(r, token) for r in rs) for m, rs in batches.items()}
    tpp = {m: kv.tokens_per_page(m) for m in batches}
    # per model, the iteration of that model (from 1) at which each request needs a new page
    need = {m: [kv.num_pages_of(r.request_id) * tpp[m] - r.num_computed_tokens + 1 for r in rs]
            for m, rs in batches.items()}
    next_need = {m: min(n) for m, n in need.items()}
    done = dict.fromkeys(batches, 0)  # iterations of each model so far
    size = {m: len(rs) for m, rs in batches.items()}
    ctx = {m: sum(r.num_computed_tokens + 1 for r in rs) for m, rs in batches.items()}
    free = kv.pool.num_free
    clock = rep.clock
    t = clock.now()
    ends: dict[str, list[float]] = {m: [] for m in batches}
    steps = 0
    while steps < max_steps and t < horizon:
        m = policy.model_order(batches, t)[0]
        if done[m] == left[m]:
            break  # a request finishes in this iteration: the normal path
        step = done[m] + 1
        if step == next_need[m]:
            grow = [i for i, n in enumerate(need[m]) if n == step]
            if len(grow) > free:
                break  # it needs pages that are not free: the normal path preempts
            free -= len(grow)
            for i in grow:
                need[m][i] += tpp[m]
            next_need[m] = min(need[m])
        b = size[m]
        dt = ex.iteration_time(m, BatchShape(b, ctx[m], b, b, ctx[m]))
        ex.busy_s += dt
        clock.advance(dt)
        t = clock.now()
        if rm is not None:
            rm.on_run(m, t, dt, b)
        policy.on_decode_run(m, batches[m], (dt,), (t,), (ctx[m],))
        ctx[m] += b
        done[m] = step
        ends[m].append(t)
        steps += 1
    if not steps:
        return None
    for m, k in done.items():
        if k:
            sched.decode_steps(batches[m], token, k, ends[m][0])
    return ends
