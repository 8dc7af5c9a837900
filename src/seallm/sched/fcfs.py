"""First-come-first-served: the vLLM-like baseline."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from seallm.sched.policy import SchedulingPolicy

if TYPE_CHECKING:
    from seallm.core import Request


class FCFSPolicy(SchedulingPolicy):
    """vLLM's order: earliest arrival first (request priority ignored), latest arrival
    preempted first; resident models take turns round-robin, one iteration each."""

    name = "fcfs"

    def __init__(self) -> None:
        self._last: str | None = None
        self._order: list[str] = []

    def model_order(self, runnable: dict[str, list["Request"]], now: float) -> list[str]:
        for m in runnable:
            if m not in self._order:
                self._order.append(m)
        ring = [m for m in self._order if m in runnable]
        if self._last in ring:
            i = ring.index(self._last) + 1
            ring = ring[i:] + ring[:i]
        return ring

    def on_step(self, plan, result, now: float) -> None:
        self._last = plan.model

    def steady_decode_until(self, batches, now: float) -> float | None:
        return math.inf  # the order and the ring change only by on_step

    def on_decode_run(self, model, requests, step_times, end_times, contexts) -> None:
        self._last = model

    def priority_key(self, request: "Request", now: float) -> tuple[float, str]:
        return (request.arrival_time, request.request_id)
