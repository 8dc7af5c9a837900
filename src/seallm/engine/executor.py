"""What runs a planned iteration: the torch model runner or a cost-model stand-in."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from seallm.core import StepPlan, StepResult
from seallm.engine.messages import ModelEvent


class Executor(Protocol):
    """Runs one :class:`StepPlan` on a device and returns the sampled tokens.

    Before the forward pass an executor must perform ``plan.swaps`` (page copies between the
    device pool and the host swap space) in their order: the scheduler may already have
    given a swapped-out page to a sequence of this very plan.

    Implementations: ``seallm.worker.ModelExecutor`` (torch, real forward passes) and the
    simulator's cost-model executor. The engine reaches torch only through this interface.
    """

    def execute(self, plan: StepPlan) -> StepResult: ...


@runtime_checkable
class ModelLoader(Protocol):
    """An executor that loads and unloads models while it serves the others.

    ``start_load`` begins loading a model's weights onto the device (in the background:
    iterations of resident models go on); ``poll_loads`` returns the loads finished since
    the last call as ``ModelEvent(kind="loaded" | "load_failed")``; ``unload`` drops a
    model's weights from the device at once (its requests hold no pages by then).
    """

    def start_load(self, model: str) -> None: ...

    def poll_loads(self) -> list[ModelEvent]: ...

    def unload(self, model: str) -> None: ...


@runtime_checkable
class ConcurrentExecutor(Protocol):
    """An executor that runs the iterations of several models at the same time, each on its
    own share of the device (a CPU's cores). ``max_concurrent_plans`` (>= 1) says how many
    at most; ``execute_concurrent`` runs one plan per model (distinct models, page copies
    only in the first) and returns, in the same order, each plan's :class:`StepResult` or
    the exception its iteration raised (one plan failing leaves the others' results).

    A concurrent result's ``step_time`` is the plan's share of the device time: its wall
    time times the fraction of the device it had (two plans on one core each of two: half
    their wall time), so that per-iteration costs learned from it add up to the device's
    busy time as serial iterations' do.
    """

    max_concurrent_plans: int

    def execute_concurrent(self, plans: "list[StepPlan]") -> "list[StepResult | Exception]": ...
