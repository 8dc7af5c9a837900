"""Torch side of the engine: the model executor (weights, KV pool tensor, sampler)."""

from seallm.worker.executor import ModelExecutor
from seallm.worker.sampler import Sampler

__all__ = ["ModelExecutor", "Sampler"]
