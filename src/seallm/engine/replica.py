"""The replica as a unit: one frozen :class:`ReplicaSpec` and one builder, torch-free.

A replica is one device (or, later, one tensor-parallel device group) with its unified KV
pool, host swap space, scheduler and policy, and an executor that runs its iterations. The
server's engine process, the offline ``LLM`` and the simulator all build theirs with
:func:`build_replica`; only the executor differs (real forward passes, or a cost model),
and it comes from the ``executor_factory`` the caller passes, which receives the pool
layout (:class:`ReplicaLayout`) decided here. Pool sizing lives here and nowhere else.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from seallm.core import Clock, WallClock
from seallm.engine.core import ReplicaCore
from seallm.engine.executor import Executor
from seallm.kv import KVCacheManager, KVSpec, PagePool, default_page_size_bytes
from seallm.sched import Scheduler, SchedulerConfig, SchedulingPolicy, make_policy
from seallm.sched.residency import ResidencyConfig, ResidencyManager, initial_residents

logger = logging.getLogger("seallm")


@dataclass(frozen=True)
class ReplicaModel:
    """A model the replica may hold: its served name, the shape of its KV cache, the bytes
    of its weights on the device (0: unknown, counts as 0 against ``weights_memory``), and
    whether it is pinned (never unloaded)."""

    name: str
    kv_spec: KVSpec
    weights_bytes: int = 0
    pinned: bool = False


@dataclass(frozen=True)
class ReplicaSpec:
    """Everything that defines one replica, in plain values.

    Attributes:
        models: the models the replica may hold; the page size is chosen for all of them.
        kv_cache_bytes: bytes of the unified KV pool on the device.
        device: "cpu", "cuda[:i]", or a simulated device's name.
        tensor_parallel_size: devices of the group (1 today; the cluster issue uses more).
        page_size_bytes: KV page size; None: the smallest power of two giving every model at
            least 16 tokens per page.
        swap_space_bytes: host memory for swapped-out KV pages (used with swap preemption).
        scheduler: token budget, sequences per iteration, preemption mode.
        scheduling_policy, policy_options: the policy by name and its knobs.
        profiles_path: where the ``seallm`` policy keeps service profiles (loaded if present).
        max_resident_models: most models resident at once (None: all); the others are
            loaded on demand (:mod:`seallm.sched.residency`).
        weights_memory_bytes: device bytes for resident weights (None: no limit).
        residency_policy: ``"seallm"`` (load by urgency, evict the least requested idle
            model) or ``"lru"`` (load in arrival order, evict the least recently used).
        residency_preempt_after: ``seallm``: a drain lasting this many times what preempting
            costs (both models' predicted load times plus recomputing the running context)
            ends by preempting (None: always wait for the drain).

    Raises:
        ValueError: no models, duplicate names, a non-positive size, or an unknown policy.
    """

    models: tuple[ReplicaModel, ...]
    kv_cache_bytes: int
    device: str = "cpu"
    tensor_parallel_size: int = 1
    page_size_bytes: int | None = None
    swap_space_bytes: int = 0
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    scheduling_policy: str = "seallm"
    policy_options: Mapping = field(default_factory=dict)
    profiles_path: str | None = None
    max_resident_models: int | None = None
    weights_memory_bytes: int | None = None
    residency_policy: str = "seallm"
    residency_preempt_after: float | None = 1.0

    def __post_init__(self) -> None:
        if not self.models:
            raise ValueError("a replica needs at least one model")
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ValueError(f"model names must be unique, got {names}")
        if self.kv_cache_bytes < 1:
            raise ValueError(f"kv_cache_bytes must be positive, got {self.kv_cache_bytes}")
        if self.tensor_parallel_size != 1:
            raise ValueError("tensor_parallel_size > 1 is not supported yet")
        if self.swap_space_bytes < 0:
            raise ValueError(f"swap_space_bytes must be >= 0, got {self.swap_space_bytes}")
        self.residency_config()  # validates

    def residency_config(self) -> ResidencyConfig:
        return ResidencyConfig(self.max_resident_models, self.weights_memory_bytes,
                               frozenset(m.name for m in self.models if m.pinned), self.residency_policy,
                               preempt_after=self.residency_preempt_after)

    def initial_residents(self) -> list[str]:
        """Models resident at start: pinned ones, then the others in order while they fit.

        Raises:
            ValueError: the limits leave some model unloadable.
        """
        return initial_residents([m.name for m in self.models], {m.name: m.weights_bytes for m in self.models},
                                 self.residency_config())

    @property
    def page_bytes(self) -> int:
        """The page size in bytes (given, or derived from every model's KV shape)."""
        return self.page_size_bytes or default_page_size_bytes([m.kv_spec for m in self.models])


@dataclass(frozen=True)
class ReplicaLayout:
    """How the KV memory of a replica is cut, as the executor needs it.

    Attributes:
        num_pages: device pages of the pool; page_size_bytes: bytes per page.
        tokens_per_page: model -> its tokens per page (every model the replica may hold).
        num_host_pages: pages of the host swap space (0: no swapping).
        resident: the models resident at start, whose weights the executor must hold.
    """

    num_pages: int
    page_size_bytes: int
    tokens_per_page: Mapping[str, int]
    num_host_pages: int
    resident: tuple[str, ...] = ()


@dataclass
class Replica:
    """A built replica: its loop body and the parts callers read."""

    spec: ReplicaSpec
    layout: ReplicaLayout
    core: ReplicaCore
    kv: KVCacheManager
    scheduler: Scheduler


def load_policy_profiles(policy: SchedulingPolicy, path: str | None) -> None:
    """Start ``policy`` from the service profiles at ``path`` if it keeps profiles and the
    file exists (a server's warm start; the simulator does the same).

    Raises:
        ValueError: the file is not a valid profile file.
    """
    if path and os.path.exists(path) and hasattr(policy, "load_profiles"):
        logger.info("seallm: service profiles of %s loaded from %s", policy.load_profiles(path), path)


def build_replica(spec: ReplicaSpec, executor_factory: Callable[[ReplicaLayout], Executor],
                  clock: Clock | None = None, policy: SchedulingPolicy | None = None) -> Replica:
    """Size the pool, register the models, make the policy and scheduler, and assemble the
    :class:`ReplicaCore` around the executor ``executor_factory(layout)`` returns.

    ``policy`` replaces the spec's named policy with a ready object (the simulator's
    ablations); ``clock`` defaults to wall time.

    Raises:
        ValueError: a pool smaller than one page, or a model whose token does not fit a page.
    """
    page = spec.page_bytes
    num_pages = spec.kv_cache_bytes // page
    if num_pages < 1:
        raise ValueError(f"a KV pool of {spec.kv_cache_bytes} bytes is smaller than one page ({page} bytes)")
    host_pages = spec.swap_space_bytes // page if spec.scheduler.preemption_mode == "swap" else 0
    kv = KVCacheManager(PagePool(num_pages, page), PagePool(host_pages, page) if host_pages else None)
    residents = spec.initial_residents()
    by_name = {m.name: m for m in spec.models}
    for name in residents:
        kv.add_model(name, by_name[name].kv_spec)
    tpp = {}
    for m in spec.models:
        tpp[m.name] = m.kv_spec.tokens_per_page(page)  # raises for a token larger than a page
    layout = ReplicaLayout(num_pages, page, tpp, host_pages, tuple(residents))
    executor = executor_factory(layout)
    if policy is None:
        policy = make_policy(spec.scheduling_policy, dict(spec.policy_options))
        load_policy_profiles(policy, spec.profiles_path)
    scheduler = Scheduler(kv, policy, spec.scheduler, specs={m.name: m.kv_spec for m in spec.models})
    residency = ResidencyManager(spec.residency_config(), {m.name: m.weights_bytes for m in spec.models}, residents)
    core = ReplicaCore(scheduler, executor, clock or WallClock(), residency)
    return Replica(spec, layout, core, kv, scheduler)
