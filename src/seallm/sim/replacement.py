"""Adaptive replacement in the cluster simulator (torch-free): the
:class:`~seallm.cluster.replacement.Replanner` decides, :class:`ReplacementDriver` turns its
new plans into replica changes that :func:`~seallm.sim.device.serve_replicas` applies.

What a switch does (a choice of ours; SeaLLM §2.5 names "draining or migrating"): a group
whose devices or models change retires at the switch, once its iteration under way ends;
its unfinished requests migrate through the router (recompute: the prompt plus the tokens
already generated, for the tokens still owed; a request keeps its arrival time and its
token times), and a group of the new plan starts on those devices after its weights load
(:func:`~seallm.cluster.replacement.load_time_s`), queueing the requests routed to it
meanwhile. Groups that keep their devices and models keep serving without a pause. No
request is lost or served twice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from seallm.cluster.estimate import ServiceLoad
from seallm.cluster.replacement import Replanner, load_time_s, plan_change
from seallm.cluster.spec import GroupPlan, PlacementPlan


@dataclass(frozen=True)
class NewReplica:
    """A replica a switch starts.

    Attributes:
        models: the services it serves. load_s: seconds its weights take to load.
        blocked_by: indices of retiring replicas on its devices (it starts when they have
            stopped, plus ``load_s``). build: makes the replica on a clock starting at the
            given time (s).
    """

    models: frozenset[str]
    load_s: float
    blocked_by: tuple[int, ...]
    build: Callable[[float], object]


@dataclass(frozen=True)
class Switch:
    """Replica changes at one instant: indices of replicas that retire, replicas that start
    (appended to the replica list in this order)."""

    retire: tuple[int, ...]
    add: tuple[NewReplica, ...]


class ReplacementDriver:
    """Drives a :class:`Replanner` inside :func:`~seallm.sim.device.serve_replicas`.

    Args:
        replanner: decides when and what to re-place.
        groups: the group of each initial replica, in replica order.
        build: ``(group, loads, start_s) -> replica``: a simulated replica of ``group`` for
            a plan made with ``loads`` (MuxServe's quotas read them), clock from ``start_s``.
    """

    def __init__(self, replanner: Replanner, groups: Sequence[GroupPlan],
                 build: Callable[[GroupPlan, list[ServiceLoad], float], object]) -> None:
        self.replanner = replanner
        self.build = build
        self.index: dict[tuple, int] = {self._key(g): n for n, g in enumerate(groups)}
        self.num_replicas = len(groups)

    @staticmethod
    def _key(g: GroupPlan) -> tuple:
        return (g.devices, frozenset(g.models))

    @property
    def next_check_s(self) -> float:
        return self.replanner.next_check_s

    def observe(self, model: str, t: float, input_len: int, output_len: int) -> None:
        self.replanner.observe(model, t, input_len, output_len)

    def check(self, t: float) -> Switch | None:
        """The replica changes of a switch at ``t`` (s), or None."""
        old: PlacementPlan = self.replanner.plan
        new = self.replanner.check(t)
        if new is None:
            return None
        change = plan_change(old, new)
        retire = tuple(self.index.pop(self._key(g)) for g in change.retired)
        retired_devices = {n: set(g.devices) for n, g in zip(retire, change.retired)}
        loads = self.replanner.plan_loads
        by_name = {s.name: s for s in loads}
        add = []
        for g in change.added:
            blocked = tuple(n for n, devs in retired_devices.items() if devs & set(g.devices))
            add.append(NewReplica(frozenset(g.models), load_time_s(g, by_name, self.replanner.bandwidth), blocked,
                                  lambda start, g=g: self.build(g, loads, start)))
            self.index[self._key(g)] = self.num_replicas
            self.num_replicas += 1
        return Switch(retire, tuple(add))
