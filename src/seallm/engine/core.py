"""``ReplicaCore``: schedule -> execute -> update, one iteration at a time."""

from __future__ import annotations

from seallm.core import Clock, FinishReason, Request, WallClock
from seallm.engine.executor import Executor
from seallm.sched import Scheduler


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
        """Run one iteration; returns the requests that got a token (finished ones included)."""
        plan = self.scheduler.schedule(self.clock.now())
        if plan is None:
            return []
        result = self.executor.execute(plan)
        self.num_steps += 1
        return self.scheduler.update(plan, result, self.clock.now())
