"""A cost-model stand-in for the model executor: no tensors, only predicted step times."""

from __future__ import annotations

from collections.abc import Mapping

from seallm.core import ManualClock, SampleOutput, StepPlan, StepResult
from seallm.cost import BatchShape, CostModel
from seallm.engine.messages import ModelEvent


class CostModelExecutor:
    """Implements the engine's ``Executor`` protocol for the simulator.

    Each iteration takes ``cost_models[plan.model].step_time(BatchShape.of(plan))`` seconds
    plus the plan's page copies (swap preemption) at ``swap_bandwidth``; the executor reports
    that time in its ``StepResult`` (``step_time``, ``swap_time``), never moves the clock
    (the ``ReplicaCore`` or the simulator does), and samples ``token_id`` for every chunk that asks for a
    sample (simulated requests set ``ignore_eos`` so lengths follow ``max_tokens``).

    Args:
        cost_models: per model, predicted seconds of one iteration.
        clock: the simulation clock (read only: when a load starts and ends).
        page_size_bytes: bytes per KV page. swap_bandwidth: bytes/s between the device and
            the host swap space.
        token_id: the token every sample returns.
        weights_bytes: per model, bytes of its weights (for simulated loads).
        disk_bandwidth: bytes/s of a cold load (checkpoint read).
        host_cache_bandwidth: bytes/s of a reload from the host weight cache (unbounded in
            the simulator: every model loaded once is cached).

    Loads (``ModelLoader``) run in simulated time: a load started at ``t`` finishes at
    ``t + bytes / bandwidth`` while iterations of the resident models go on.

    Raises:
        KeyError: from :meth:`execute` for a model without a cost model.
    """

    def __init__(self, cost_models: Mapping[str, CostModel], clock: ManualClock, page_size_bytes: int = 0,
                 swap_bandwidth: float = 25e9, token_id: int = 3, weights_bytes: Mapping[str, int] | None = None,
                 disk_bandwidth: float = 2e9, host_cache_bandwidth: float = 25e9) -> None:
        self.cost_models = dict(cost_models)
        self.clock = clock
        self.page_size_bytes = page_size_bytes
        self.swap_bandwidth = swap_bandwidth
        self.token_id = token_id
        self.busy_s = 0.0
        self.weights_bytes = dict(weights_bytes or {})
        self.disk_bandwidth, self.host_cache_bandwidth = disk_bandwidth, host_cache_bandwidth
        self.num_loads = 0  # loads started
        self._cached: set[str] = set()
        self._loads: dict[str, tuple[float, str, float]] = {}  # model -> (done at, source, seconds)

    def start_load(self, model: str) -> None:
        if model not in self.cost_models:
            raise ValueError(f"unknown model {model!r}")
        if model in self._loads:
            return
        self.num_loads += 1
        cached = model in self._cached
        bw = self.host_cache_bandwidth if cached else self.disk_bandwidth
        t = self.weights_bytes.get(model, 0) / bw
        self._loads[model] = (self.clock.now() + t, "host_cache" if cached else "disk", t)

    def poll_loads(self) -> list[ModelEvent]:
        now = self.clock.now()
        out = []
        for m, (done, source, t) in list(self._loads.items()):
            if done <= now:
                del self._loads[m]
                out.append(ModelEvent(m, "loaded", source, t, self.weights_bytes.get(m, 0)))
        return out

    def unload(self, model: str) -> None:
        self._cached.add(model)

    def next_load_done(self) -> float | None:
        """Simulated time at which the next load finishes (None: none under way)."""
        return min((d for d, _, _ in self._loads.values()), default=None)

    def iteration_time(self, model: str, shape: BatchShape) -> float:
        """Predicted seconds of an iteration of ``model`` with batch ``shape`` (at least 1 ns)."""
        return _seconds(self.cost_models[model].step_time(shape))

    def decode_times(self, model: str, batch_size: int, context_tokens: int, n: int) -> list[float]:
        """:meth:`iteration_time` of ``n`` successive decode iterations of ``batch_size``
        sequences, ``context_tokens`` KV tokens read by the first, ``batch_size`` more by each
        next one (the cost model's ``decode_step_times`` when it has one)."""
        cm = self.cost_models[model]
        b = batch_size
        if hasattr(cm, "decode_step_times"):
            raw = cm.decode_step_times(b, context_tokens, n)
        else:
            raw = [cm.step_time(BatchShape(b, c, b, b, c)) for c in range(context_tokens, context_tokens + n * b, b)]
        return [_seconds(x) for x in raw]

    def execute(self, plan: StepPlan) -> StepResult:
        t = self.iteration_time(plan.model, BatchShape.of(plan))
        swap = sum(len(c.pages) for c in plan.swaps) * self.page_size_bytes / self.swap_bandwidth
        self.busy_s += t + swap
        samples = {s.request_id: SampleOutput(self.token_id) for s in plan.seqs if s.sample}
        return StepResult(plan.model, samples, t, swap)


def _seconds(step_time: float) -> float:
    """A predicted step time as the executor reports it (at least 1 ns)."""
    return max(float(step_time), 1e-9)
