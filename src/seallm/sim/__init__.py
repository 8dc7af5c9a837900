"""Discrete-event simulation with the real scheduler code and cost-model executors (torch-free).

:func:`simulate_device` runs one device: its ``ReplicaCore`` with the same ``Scheduler`` and
policy as the server, and a :class:`CostModelExecutor` that predicts each iteration's time.
"""

from seallm.sim.device import DeviceResult, SimModel, simulate_device
from seallm.sim.executor import CostModelExecutor

__all__ = ["CostModelExecutor", "DeviceResult", "SimModel", "simulate_device"]
