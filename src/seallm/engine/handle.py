"""Replica handles: one way to drive a replica from outside, whatever runs it (torch-free).

A handle takes the messages of :mod:`seallm.engine.messages` (requests, aborts, loads,
unloads) and gives back :class:`~seallm.engine.messages.EngineOutputs`, plus a load
snapshot that a router or a placement step reads. Implementations:

* :class:`LocalReplica`: the engine loop in this process over in-memory queues, around any
  built replica (real forward passes, or a cost model:
  :func:`seallm.sim.replica.simulated_replica`); the caller turns the loop with
  :meth:`LocalReplica.step`.
* ``seallm.server.engine_client.EngineClient``: the same messages to an engine process over
  ZeroMQ (asynchronous: ``add``, ``abort``, ``load_model``, ``unload_model``; outputs are
  routed to per-request queues).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from typing import Protocol

from seallm.engine.core import ReplicaCore, ReplicaSnapshot
from seallm.engine.loop import EngineLoop
from seallm.engine.messages import (AbortRequests, AddRequest, EngineOutputs, LoadModel, Ready, ToEngine,
                                    UnloadModel)
from seallm.engine.requests import ModelLimits


class ReplicaHandle(Protocol):
    """What the server, the offline API and the simulator drive a replica through."""

    ready: Ready

    def submit(self, request: AddRequest) -> None: ...

    def abort(self, request_ids: Sequence[str], reason: str = "abort") -> None: ...

    def load_model(self, op_id: str, model: str) -> None: ...

    def unload_model(self, op_id: str, model: str, force: bool = False) -> None: ...

    def outputs(self) -> list[EngineOutputs]: ...

    def snapshot(self) -> ReplicaSnapshot: ...


class LocalReplica:
    """A replica driven in this process: an :class:`EngineLoop` over in-memory queues.

    Args:
        core: the built replica's loop body.
        configs: model -> limits (vocabulary, context length, EOS ids) for request checks.
        max_waiting_requests, max_waiting_tokens, max_queue_delay_s: admission control, as
            in the server (429 deltas beyond them).

    Messages take effect at the next :meth:`step`, which runs one turn of the loop (one
    iteration when there is work); outputs accumulate until :meth:`outputs` is called.
    """

    def __init__(self, core: ReplicaCore, configs: Mapping[str, ModelLimits], max_waiting_requests: int | None = None,
                 max_waiting_tokens: int | None = None, max_queue_delay_s: float | None = None) -> None:
        self.core = core
        self._inbox: deque[ToEngine] = deque()
        self._out: list[EngineOutputs] = []
        self.loop = EngineLoop(core, dict(configs), self._next, self._put, max_waiting_requests, max_waiting_tokens,
                               max_queue_delay_s)
        self.ready = self.loop.ready_message()

    def _next(self, timeout_ms: int) -> ToEngine | None:
        return self._inbox.popleft() if self._inbox else None

    def _put(self, msg) -> None:
        if isinstance(msg, EngineOutputs):
            self._out.append(msg)

    def submit(self, request: AddRequest) -> None:
        self._inbox.append(request)

    def abort(self, request_ids: Sequence[str], reason: str = "abort") -> None:
        self._inbox.append(AbortRequests(list(request_ids), reason))

    def load_model(self, op_id: str, model: str) -> None:
        self._inbox.append(LoadModel(op_id, model))

    def unload_model(self, op_id: str, model: str, force: bool = False) -> None:
        self._inbox.append(UnloadModel(op_id, model, force))

    def step(self) -> None:
        """One turn of the loop: queued messages, then one iteration if there is work."""
        self.loop.run_once(0)

    def has_work(self) -> bool:
        """Messages not yet taken, requests not finished, or a residency change under way."""
        return bool(self._inbox) or self.core.has_unfinished()

    def outputs(self) -> list[EngineOutputs]:
        out, self._out = self._out, []
        return out

    def snapshot(self) -> ReplicaSnapshot:
        return self.core.snapshot()
