"""The interface a scheduling policy implements.

The :class:`~seallm.sched.scheduler.Scheduler` owns the mechanics (queues, KV pages,
chunking, preemption); a policy only answers three questions: which model runs the next
iteration, how urgent each request is, and what to learn from a finished step. The SeaLLM
doubling-budget policy plugs in here without engine changes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from seallm.core import Request, StepPlan, StepResult


class SchedulingPolicy(ABC):
    """Decides model turns and request order on one device.

    Priority keys are compared across all models of the device: the smallest key runs
    first and the largest key loses its KV pages first under memory pressure.
    """

    name: str = "abstract"

    @abstractmethod
    def model_order(self, models_with_work: list[str], now: float) -> list[str]:
        """Models to try for the next iteration, best first (all of ``models_with_work``)."""

    @abstractmethod
    def priority_key(self, request: "Request", now: float) -> Any:
        """Sortable urgency of ``request``; lower runs first and is preempted last."""

    def on_step(self, plan: "StepPlan", result: "StepResult", now: float) -> None:
        """Learn from a finished iteration (profiles, budgets). Default: nothing."""

    def on_finish(self, request: "Request", now: float) -> None:
        """Forget per-request state. Default: nothing."""


def make_policy(name: str) -> SchedulingPolicy:
    """Policy by name: ``"fcfs"``.

    Raises:
        ValueError: for an unknown name, listing the known ones.
    """
    from seallm.sched.fcfs import FCFSPolicy

    policies = {"fcfs": FCFSPolicy}
    try:
        return policies[name]()
    except KeyError:
        raise ValueError(f"unknown scheduling policy {name!r}; known: {sorted(policies)}") from None
