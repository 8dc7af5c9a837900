"""What runs a planned iteration: the torch model runner or a cost-model stand-in."""

from __future__ import annotations

from typing import Protocol

from seallm.core import StepPlan, StepResult


class Executor(Protocol):
    """Runs one :class:`StepPlan` on a device and returns the sampled tokens.

    Before the forward pass an executor must perform ``plan.swaps`` (page copies between the
    device pool and the host swap space) in their order: the scheduler may already have
    given a swapped-out page to a sequence of this very plan.

    Implementations: ``seallm.worker.ModelExecutor`` (torch, real forward passes) and the
    simulator's cost-model executor. The engine reaches torch only through this interface.
    """

    def execute(self, plan: StepPlan) -> StepResult: ...
