"""A cluster and a placement plan in plain values (torch-free).

:class:`ClusterSpec` describes the devices (type, nodes, devices per node); a
:class:`PlacementPlan` says which device groups exist, with which tensor-parallel degree, and
which services each one holds. Placement algorithms (:mod:`seallm.cluster.placement`,
:mod:`seallm.cluster.baselines`) produce plans; the cluster simulator and ``seallm place``
consume them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from seallm.cluster.catalog import CatalogModel
from seallm.cost import DEVICES, DeviceSpec

DEVICE_ALIASES = {"a100": "a100-80gb", "h100": "h100-sxm"}


def device_spec(name: str) -> DeviceSpec:
    """The datasheet spec of a device by name (``a100-80gb``/``a100``, ``h100-sxm``/``h100``,
    ``h200``).

    Raises:
        ValueError: an unknown name.
    """
    key = DEVICE_ALIASES.get(name.lower(), name.lower())
    if key not in DEVICES:
        raise ValueError(f"unknown device {name!r}; known: {', '.join(sorted(DEVICES) + sorted(DEVICE_ALIASES))}")
    return DEVICES[key]


@dataclass(frozen=True)
class ClusterSpec:
    """Devices of a cluster: ``num_nodes`` nodes of ``devices_per_node`` devices of one type.

    Attributes:
        device: device type (:func:`device_spec`).
        num_nodes, devices_per_node: the shape; a tensor-parallel group stays in one node.
        memory_utilization: share of each device's memory for weights and KV (vLLM's
            ``gpu_memory_utilization``; the rest is activations and the runtime).
        kv_floor_tokens: KV tokens every model of a group must be able to hold at least
            (placement never fills a group with weights alone).

    Raises:
        ValueError: an unknown device or a non-positive size.
    """

    device: str = "h100-sxm"
    num_nodes: int = 4
    devices_per_node: int = 8
    memory_utilization: float = 0.9
    kv_floor_tokens: int = 8192

    def __post_init__(self) -> None:
        device_spec(self.device)
        if self.num_nodes < 1 or self.devices_per_node < 1:
            raise ValueError("a cluster needs at least one node of at least one device")
        if not 0 < self.memory_utilization <= 1:
            raise ValueError(f"memory_utilization must be in (0, 1], got {self.memory_utilization}")
        if self.kv_floor_tokens < 0:
            raise ValueError(f"kv_floor_tokens must be >= 0, got {self.kv_floor_tokens}")

    @property
    def spec(self) -> DeviceSpec:
        return device_spec(self.device)

    @property
    def num_devices(self) -> int:
        return self.num_nodes * self.devices_per_node

    def group_memory_bytes(self, size: int) -> int:
        """Bytes for weights and KV on a group of ``size`` devices."""
        return int(size * self.spec.memory_bytes * self.memory_utilization)

    def kv_bytes(self, size: int, archs: list[CatalogModel]) -> int:
        """KV pool bytes left on a group of ``size`` devices holding ``archs`` (may be < 0)."""
        return self.group_memory_bytes(size) - sum(a.weights_bytes for a in archs)

    def fits(self, size: int, archs: list[CatalogModel]) -> bool:
        """Whether ``archs`` fit on a group of ``size`` devices with their KV floor each."""
        return self.kv_bytes(size, archs) >= sum(self.kv_floor_tokens * a.kv_spec.bytes_per_token for a in archs)

    def min_group_size(self, arch: CatalogModel) -> int | None:
        """Smallest power-of-two group (within a node) that holds ``arch`` alone; None: none."""
        size = 1
        while size <= self.devices_per_node:
            if self.fits(size, [arch]):
                return size
            size *= 2
        return None


@dataclass(frozen=True)
class GroupPlan:
    """One device group of a plan.

    Attributes:
        node: its node. devices: global device indices (``node * devices_per_node + i``).
        models: the services it holds (names).
        predicted_e2e_s: per service, the mean E2E latency placement predicted (s).
    """

    node: int
    devices: tuple[int, ...]
    models: tuple[str, ...]
    predicted_e2e_s: tuple[tuple[str, float], ...] = ()

    @property
    def tensor_parallel_size(self) -> int:
        return len(self.devices)


@dataclass(frozen=True)
class PlacementPlan:
    """Device groups and the services on each.

    Attributes:
        algorithm: which algorithm made it (``seallm``, ``dedicated``, ``alpaserve``, ``muxserve``).
        groups: the groups (empty ones hold nothing and serve nothing).
        objective: the placement's predicted objective, rate-weighted over services
            (mean slowdown, E2E / served-alone E2E, unless the algorithm says otherwise;
            inf: some service unplaced).
        search_s: wall time the search took (s).
    """

    algorithm: str
    groups: tuple[GroupPlan, ...]
    objective: float = math.inf
    search_s: float = 0.0

    def replicas_of(self, service: str) -> list[int]:
        """Indices of the groups holding ``service``."""
        return [i for i, g in enumerate(self.groups) if service in g.models]

    def check(self, cluster: ClusterSpec, archs: dict[str, CatalogModel]) -> None:
        """Raise ``ValueError`` unless every service of ``archs`` is placed, no device is in two
        groups, every group lies in its node with a power-of-two size, and every group's
        models fit in its memory with their KV floor."""
        used: set[int] = set()
        for i, g in enumerate(self.groups):
            n = len(g.devices)
            if n < 1 or n & (n - 1):
                raise ValueError(f"group {i}: {n} devices is not a power of two")
            for d in g.devices:
                if d in used:
                    raise ValueError(f"device {d} is in two groups")
                if not 0 <= d < cluster.num_devices or d // cluster.devices_per_node != g.node:
                    raise ValueError(f"group {i}: device {d} is not on node {g.node}")
                used.add(d)
            unknown = [m for m in g.models if m not in archs]
            if unknown:
                raise ValueError(f"group {i}: unknown services {unknown}")
            if g.models and not cluster.fits(n, [archs[m] for m in g.models]):
                raise ValueError(f"group {i}: {list(g.models)} do not fit on {n} x {cluster.device}")
        missing = [s for s in archs if not self.replicas_of(s)]
        if missing:
            raise ValueError(f"services not placed: {missing}")
