"""``ReplicaCore``: schedule -> execute -> update, one iteration at a time."""

from __future__ import annotations

import logging
from dataclasses import replace

from seallm.core import Clock, FinishReason, Request, StepPlan, StepResult, WallClock
from seallm.engine.executor import Executor
from seallm.sched import Scheduler

logger = logging.getLogger("seallm.engine")


class ReplicaCore:
    """One device's engine loop body, shared by the real engine and the simulator.

    Args:
        scheduler: queues, KV pages and policy of the device.
        executor: runs a plan (torch model runner, or a cost model in the simulator).
        clock: source of ``now`` in seconds.
    """

    def __init__(self, scheduler: Scheduler, executor: Executor, clock: Clock | None = None) -> None:
        self.scheduler = scheduler
        self.executor = executor
        self.clock = clock or WallClock()
        self.num_steps = 0

    def add_request(self, request: Request) -> None:
        """Queue a request (see :meth:`Scheduler.add_request` for the errors raised)."""
        self.scheduler.add_request(request)

    def abort_request(self, request_id: str, reason: FinishReason = FinishReason.ABORT) -> Request | None:
        """End a request now and free its KV pages; None if it was unknown or done."""
        return self.scheduler.finish_request(request_id, reason, self.clock.now())

    def has_unfinished(self) -> bool:
        return self.scheduler.has_unfinished()

    def step(self) -> list[Request]:
        """Run one iteration; returns the requests that got a token (finished ones included)
        and those whose processing failed (finished with ``abort`` and ``error`` set).

        A failing iteration fails only the requests that cause it: when the executor raises
        on a batch of several sequences, each sequence runs again alone (without the plan's
        page copies, which already ran); a sequence that fails alone is finished with an
        error, the others keep their results.
        """
        plan = self.plan()
        if plan is None:
            return []
        try:
            result = self.executor.execute(plan)
        except Exception as e:  # noqa: BLE001 - isolate whatever failed
            return self._isolate(plan, e)
        return self.apply(plan, result)

    def plan(self) -> StepPlan | None:
        """First half of an iteration: the scheduler's plan at ``clock.now()`` (None: nothing
        to run). Whoever executes it (this core's executor, or a simulator interleaving many
        replicas by events) must hand the result to :meth:`apply` before the next plan."""
        return self.scheduler.schedule(self.clock.now())

    def apply(self, plan: StepPlan, result: StepResult) -> list[Request]:
        """Second half: apply ``result`` at ``clock.now()``; returns the requests that got a
        token (finished ones included)."""
        self.num_steps += 1
        return self.scheduler.update(plan, result, self.clock.now())

    def _isolate(self, plan: StepPlan, error: Exception) -> list[Request]:
        logger.error("iteration of %s with %d sequences failed (%s: %s); running them one by one",
                     plan.model, len(plan.seqs), type(error).__name__, error, exc_info=error)
        failed: dict[str, Exception] = {}
        good, samples, step_time = [], {}, 0.0
        if len(plan.seqs) == 1:
            failed[plan.seqs[0].request_id] = error
        else:
            for seq in plan.seqs:
                try:
                    res = self.executor.execute(replace(plan, seqs=(seq,), swaps=()))
                except Exception as e:  # noqa: BLE001
                    failed[seq.request_id] = e
                    continue
                good.append(seq)
                samples.update(res.samples)
                step_time += res.step_time
        now = self.clock.now()
        out: list[Request] = []
        for rid, e in failed.items():
            r = self.scheduler.finish_request(rid, FinishReason.ABORT, now)
            if r is not None:
                logger.error("request %s failed alone: %s: %s", rid, type(e).__name__, e)
                r.error = f"the engine failed to process this request ({type(e).__name__})"
                out.append(r)
        self.num_steps += 1
        if good:
            out += self.scheduler.update(replace(plan, seqs=tuple(good), swaps=()),
                                         StepResult(plan.model, samples, step_time), now)
        return out
