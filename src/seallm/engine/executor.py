"""What runs a planned iteration: the torch model runner or a cost-model stand-in."""

from __future__ import annotations

from typing import Protocol

from seallm.core import StepPlan, StepResult


class Executor(Protocol):
    """Runs one :class:`StepPlan` on a device and returns the sampled tokens.

    Implementations: ``seallm.worker.ModelExecutor`` (torch, real forward passes) and the
    simulator's cost-model executor. The engine reaches torch only through this interface.
    """

    def execute(self, plan: StepPlan) -> StepResult: ...
