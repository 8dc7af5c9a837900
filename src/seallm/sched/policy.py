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
    #: Whether higher-priority work may displace running requests (token budget, pages).
    preemptive: bool = False

    @abstractmethod
    def model_order(self, runnable: dict[str, list["Request"]], now: float) -> list[str]:
        """Models to try for the next iteration, best first.

        ``runnable`` maps each model with work to its runnable requests (running ones with
        tokens to compute, then waiting ones)."""

    @abstractmethod
    def priority_key(self, request: "Request", now: float) -> Any:
        """Sortable urgency of ``request``; lower runs first and is preempted last."""

    def on_arrival(self, request: "Request", now: float) -> None:
        """A request was queued. Default: nothing."""

    def on_model_delay(self, model: str, seconds: float) -> None:
        """Requests of ``model`` queued from now on wait ``seconds`` for it to be loaded
        (0: it is resident). Default: nothing."""

    def on_step(self, plan: "StepPlan", result: "StepResult", now: float) -> None:
        """Learn from a finished iteration (profiles, budgets). Default: nothing."""

    def on_finish(self, request: "Request", now: float) -> None:
        """Forget per-request state. Default: nothing."""


def make_policy(name: str, options: dict | None = None) -> SchedulingPolicy:
    """Policy by name: ``"fcfs"`` (vLLM-like baseline) or ``"seallm"`` (doubling budget).

    ``options`` are the policy's knobs (for ``seallm``: the fields of
    :class:`~seallm.sched.seallm.SeaLLMConfig`; ``seeds`` maps model -> ProfileSeed fields).

    Raises:
        ValueError: an unknown name (listing the known ones) or an unknown / invalid option.
    """
    from seallm.sched.fcfs import FCFSPolicy
    from seallm.sched.seallm import SeaLLMConfig, SeaLLMPolicy
    from seallm.sched.profile import ProfileSeed

    options = dict(options or {})
    if name == "fcfs":
        if options:
            raise ValueError(f"policy 'fcfs' takes no options, got {sorted(options)}")
        return FCFSPolicy()
    if name == "seallm":
        seeds = options.pop("seeds", None) or {}
        try:
            seeds = {m: v if isinstance(v, ProfileSeed) else ProfileSeed(**{
                k: tuple(x) if k == "output_lengths" else x for k, x in v.items()}) for m, v in seeds.items()}
            return SeaLLMPolicy(SeaLLMConfig(seeds=seeds, **options))
        except TypeError as e:
            raise ValueError(f"invalid option for policy 'seallm': {e}") from None
    raise ValueError(f"unknown scheduling policy {name!r}; known: ['fcfs', 'seallm']")
