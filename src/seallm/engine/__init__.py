"""The loop body shared by the real engine and the simulator (``ReplicaCore``), the engine
loop behind an injected inbox/outbox (``EngineLoop``), the request constructor."""

from seallm.engine.core import ReplicaCore
from seallm.engine.executor import Executor

__all__ = ["Executor", "ReplicaCore"]
