"""Request routing across replicas (torch-free): which replica serves a new request.

The rule is shared by the server's front end (:mod:`seallm.server.replicas`) and, later, the
cluster simulator; it reads only :class:`ReplicaView` values, so it never waits on a replica.

Policies:

* ``least_loaded``: among the live replicas that list the model, those where it is resident
  first (a request elsewhere would wait for a load), then the fewest requests queued or
  running on the replica over all its models (they share the device), then the
  replica's order. Join-the-shortest-queue, the rule of most LLM routers.
* ``round_robin``: the live replicas that list the model in turn, whatever their load.
* ``slo``: SLOs-Serve's try-then-forward rule (``shared/reference/slo-scheduling.md``
  §1.11): the request goes first to the next replica in turn (round robin); a replica whose
  SLO planner cannot guarantee it refuses it (``admission_mode="reject"``) and it is
  forwarded to the next live replica, and so on; the last try keeps the deployment's
  admission mode (best effort by default), so a request is never lost for want of a
  guarantee. :meth:`Router.try_order` gives the order; the caller (the server's front end,
  the cluster simulator) makes the tries.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ReplicaView:
    """What a router knows of one replica at an instant.

    Attributes:
        name: the replica's name. models: every model it may hold.
        resident: models whose weights are on its device now.
        alive: it is serving (not dead or restarting).
        load: requests queued or running on it, over all its models.
    """

    name: str
    models: frozenset[str]
    resident: frozenset[str] = field(default_factory=frozenset)
    alive: bool = True
    load: int = 0


class Router:
    """Chooses the replica of each new request by ``policy`` (see the module docstring).

    Raises:
        ValueError: an unknown policy.
    """

    POLICIES = ("least_loaded", "round_robin", "slo")

    def __init__(self, policy: str = "least_loaded") -> None:
        if policy not in self.POLICIES:
            raise ValueError(f"unknown routing policy {policy!r}; known: {list(self.POLICIES)}")
        self.policy = policy
        self._turn: dict[str, int] = {}  # model -> round-robin position

    def route(self, model: str, replicas: Sequence[ReplicaView]) -> int | None:
        """Index in ``replicas`` of the replica for a request of ``model``; None when no live
        replica lists it."""
        cands = [i for i, r in enumerate(replicas) if r.alive and model in r.models]
        if not cands:
            return None
        if self.policy in ("round_robin", "slo"):
            k = self._turn.get(model, 0)
            self._turn[model] = k + 1
            return cands[k % len(cands)]
        return min(cands, key=lambda i: (model not in replicas[i].resident, replicas[i].load, i))

    def try_order(self, model: str, replicas: Sequence[ReplicaView]) -> list[int]:
        """Indices in ``replicas`` to try in turn for a request of ``model``: with ``slo``, the
        routed replica then the other live replicas that list the model, in order after it
        (every one tried with ``admission_mode="reject"`` but the last); with the other
        policies, only the routed one. Empty when no live replica lists the model."""
        first = self.route(model, replicas)
        if first is None:
            return []
        if self.policy != "slo":
            return [first]
        cands = [i for i, r in enumerate(replicas) if r.alive and model in r.models]
        k = cands.index(first)
        return cands[k:] + cands[:k]
