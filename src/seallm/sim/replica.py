"""A simulated replica: the engine loop in this process around a cost-model executor, on its
own simulated clock (torch-free)."""

from __future__ import annotations

from collections.abc import Mapping

from seallm.core import ManualClock
from seallm.engine.handle import LocalReplica
from seallm.engine.replica import ReplicaSpec, build_replica
from seallm.engine.requests import ModelLimits
from seallm.sched import SchedulingPolicy
from seallm.sim.executor import CostModelExecutor


class SimulatedReplica(LocalReplica):
    """A :class:`LocalReplica` whose executor is a cost model on its own simulated clock
    (:func:`simulated_replica`); ``now`` is that clock, so a simulator interleaves many
    replicas by stepping the one that is furthest behind."""

    clock: ManualClock
    #: iterations run by :func:`seallm.sim.fastforward.fast_forward` (part of ``core.num_steps``)
    fast_forwarded_steps: int = 0

    @property
    def now(self) -> float:
        return self.clock.now()

    def next_event_time(self) -> float | None:
        """When this replica can next make progress by itself: now if it has runnable
        work, the end of a load under way if only that, None when idle."""
        if not self.has_work():
            return None
        if self._inbox or not self.core.idle:
            return self.now
        return self.core.executor.next_load_done()

    def quiet(self) -> bool:
        """No message waiting to be taken and none of the loop's operations open: the next
        turn only runs an iteration (see :mod:`seallm.sim.fastforward`)."""
        return not self._inbox and self.loop.settled()

    def advance_to(self, t: float) -> None:
        """Move an idle replica's clock to ``t`` (an arrival, or the end of its load)."""
        if t > self.now:
            self.clock.advance(t - self.now)


def simulated_replica(spec: ReplicaSpec, cost_models: Mapping, configs: Mapping[str, ModelLimits],
                      weights_bytes: Mapping[str, int] | None = None, start_s: float = 0.0,
                      policy: SchedulingPolicy | None = None, swap_bandwidth: float = 25e9,
                      disk_bandwidth: float = 2e9, host_cache_bandwidth: float = 25e9,
                      **admission) -> SimulatedReplica:
    """A replica built by :func:`build_replica` from ``spec`` around the simulator's
    cost-model executor (``cost_models``: model -> ``CostModel``), on a fresh clock at
    ``start_s`` (s).

    ``configs``: per model, the limits the request constructor checks. ``weights_bytes``:
    per model, bytes a simulated load moves (default: the spec's). ``policy``: a ready
    policy object instead of the spec's named one. Bandwidths in bytes/s: KV swap copies,
    cold loads (checkpoint read) and reloads from the host weight cache
    (:class:`CostModelExecutor`). ``admission``: ``max_waiting_requests``,
    ``max_waiting_tokens``, ``max_queue_delay_s`` as in the server.
    """
    clock = ManualClock(start_s)
    if weights_bytes is None:
        weights_bytes = {m.name: m.weights_bytes for m in spec.models}
    rep = build_replica(spec, lambda layout: CostModelExecutor(
        cost_models, clock, layout.page_size_bytes, swap_bandwidth, weights_bytes=weights_bytes,
        disk_bandwidth=disk_bandwidth, host_cache_bandwidth=host_cache_bandwidth), clock, policy=policy)
    handle = SimulatedReplica(rep.core, configs, **admission)
    handle.clock = clock
    return handle
