"""The loop body shared by the real engine and the simulator, and the in-process engine."""

from seallm.engine.core import ReplicaCore
from seallm.engine.executor import Executor

__all__ = ["Executor", "ReplicaCore"]
