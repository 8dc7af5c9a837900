"""A cost-model stand-in for the model executor: no tensors, only predicted step times."""

from __future__ import annotations

from collections.abc import Mapping

from seallm.core import ManualClock, SampleOutput, StepPlan, StepResult
from seallm.cost import BatchShape, CostModel


class CostModelExecutor:
    """Implements the engine's ``Executor`` protocol for the simulator.

    Each iteration takes ``cost_models[plan.model].step_time(BatchShape.of(plan))`` seconds
    plus the plan's page copies (swap preemption) at ``swap_bandwidth``: the executor
    advances ``clock`` by that much and samples ``token_id`` for every chunk that asks for a
    sample (simulated requests set ``ignore_eos`` so lengths follow ``max_tokens``).

    Args:
        cost_models: per model, predicted seconds of one iteration.
        clock: the simulation clock, advanced by each step.
        page_size_bytes: bytes per KV page. swap_bandwidth: bytes/s between the device and
            the host swap space.
        token_id: the token every sample returns.

    Raises:
        KeyError: from :meth:`execute` for a model without a cost model.
    """

    def __init__(self, cost_models: Mapping[str, CostModel], clock: ManualClock, page_size_bytes: int = 0,
                 swap_bandwidth: float = 25e9, token_id: int = 3) -> None:
        self.cost_models = dict(cost_models)
        self.clock = clock
        self.page_size_bytes = page_size_bytes
        self.swap_bandwidth = swap_bandwidth
        self.token_id = token_id
        self.busy_s = 0.0

    def execute(self, plan: StepPlan) -> StepResult:
        t = float(self.cost_models[plan.model].step_time(BatchShape.of(plan)))
        t = max(t, 1e-9)
        swap = sum(len(c.pages) for c in plan.swaps) * self.page_size_bytes / self.swap_bandwidth
        self.clock.advance(t + swap)
        self.busy_s += t + swap
        samples = {s.request_id: SampleOutput(self.token_id) for s in plan.seqs if s.sample}
        return StepResult(plan.model, samples, t, swap)
