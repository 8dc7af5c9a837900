"""Placement: which services share which device groups, and with which tensor-parallel degree
(torch-free).

* :func:`place_seallm`: SeaLLM's two stages (``shared/reference/multi-model-sharing.md``
  §2.4; the paper names them "two-stage placement" and gives no more, so the details are
  our design). Stage 1 partitions every node into power-of-two groups (each group runs
  tensor parallelism over its devices), searched by hill climbing over the multiset of node
  partitions from the best uniform one (or vLLM's layout); stage 2 assigns services, those
  needing the largest groups first, then the heaviest (rate x served-alone latency), each
  to the group where it adds the least predicted latency, then
  adds replicas of the services that gain most, while a replica lowers the prediction.
  Latency is the rate-weighted mean normalized latency (E2E / output tokens) of the
  queueing approximation :func:`~seallm.cluster.estimate.estimate_group`; memory is
  weights plus a KV floor per model (:meth:`ClusterSpec.fits`).
* :func:`place_dedicated`: vLLM's deployment, every model on its own devices: the smallest
  group that holds it, then the spare devices as replicas of the most loaded models.

The baselines' own placement algorithms are in :mod:`seallm.cluster.baselines`.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Iterable, Sequence

from seallm.cluster.estimate import CostTable, GroupEstimate, ServiceLoad, estimate_group
from seallm.cluster.spec import ClusterSpec, GroupPlan, PlacementPlan


def node_partitions(n: int) -> list[tuple[int, ...]]:
    """Every split of ``n`` devices into power-of-two groups, largest first (non-increasing),
    e.g. 4 -> (4), (2, 2), (2, 1, 1), (1, 1, 1, 1)."""
    sizes = [1 << k for k in range(n.bit_length()) if 1 << k <= n][::-1]

    def rec(left: int, cap: int) -> Iterable[tuple[int, ...]]:
        if left == 0:
            yield ()
            return
        for s in sizes:
            if s <= min(left, cap):
                for rest in rec(left - s, s):
                    yield (s,) + rest

    return list(rec(n, n))


def groups_of(cluster: ClusterSpec, partition: Sequence[tuple[int, ...]]) -> list[tuple[int, tuple[int, ...]]]:
    """``(node, devices)`` of every group, node ``i`` split by ``partition[i]``."""
    out = []
    for node, part in enumerate(partition):
        d = node * cluster.devices_per_node
        for size in part:
            out.append((node, tuple(range(d, d + size))))
            d += size
    return out


OBJECTIVES = ("slowdown", "normalized_latency")
#: The per-iteration token budget placement assumes unless told (vLLM V1's online default).
DEFAULT_CHUNK_TOKENS = 2048


class Scorer:
    """Predicted latency of groups, with the cost tables and group predictions cached.

    ``chunk_tokens``: the scheduler's per-iteration token budget (prefills are chunked).
    A group's cost is the rate-weighted sum over its services of ``objective``:
    ``slowdown`` (E2E / served-alone E2E, what SLO attainment measures: every service counts
    by its requests, whatever its size) or ``normalized_latency`` (E2E / output tokens, s per
    token: slow big models weigh more); a plan's objective is the sum over groups divided by
    the total rate.

    Raises:
        ValueError: an unknown objective.
    """

    def __init__(self, cluster: ClusterSpec, services: Sequence[ServiceLoad], objective: str = "slowdown",
                 chunk_tokens: int | None = DEFAULT_CHUNK_TOKENS) -> None:
        if objective not in OBJECTIVES:
            raise ValueError(f"unknown placement objective {objective!r}; known: {list(OBJECTIVES)}")
        self.cluster = cluster
        self.services = {s.name: s for s in services}
        self.objective = objective
        self.chunk_tokens = chunk_tokens
        self._tables: dict[tuple[str, int], CostTable] = {}
        self._cache: dict[tuple, tuple[float, GroupEstimate]] = {}
        self._norm: dict[str, float] = {}
        self.total_rate = sum(s.rate for s in services) or 1.0

    def norm(self, name: str) -> float:
        """What one request's E2E is divided by under the objective (s, or tokens)."""
        if name not in self._norm:
            s = self.services[name]
            self._norm[name] = self.alone_s(name) if self.objective == "slowdown" else s.output_len
        return self._norm[name]

    def table(self, arch_name: str, size: int) -> CostTable:
        key = (arch_name, size)
        if key not in self._tables:
            arch = next(s.arch for s in self.services.values() if s.arch.name == arch_name)
            self._tables[key] = CostTable(arch, self.cluster.spec, size, self.chunk_tokens)
        return self._tables[key]

    def alone_s(self, name: str) -> float:
        """Served-alone E2E latency of a mean request of ``name`` on its smallest group (s)."""
        s = self.services[name]
        size = self.cluster.min_group_size(s.arch) or self.cluster.devices_per_node
        return self.table(s.arch.name, size).alone_s(s.input_len, s.output_len)

    def fits(self, size: int, names: Sequence[str]) -> bool:
        return self.cluster.fits(size, [self.services[n].arch for n in names])

    def group(self, size: int, members: Sequence[tuple[str, float]]) -> tuple[float, GroupEstimate | None]:
        """(cost, estimate) of a group of ``size`` devices serving ``members`` ((name, rate))."""
        if not members:
            return 0.0, None
        key = (size, tuple(sorted((n, round(r, 9)) for n, r in members)))
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        svcs = [(self.services[n], r) for n, r in members]
        archs = [s.arch for s, _ in svcs]
        pool = max(self.cluster.kv_bytes(size, archs), 0)
        demand = [r * (s.input_len + s.output_len) * s.arch.kv_spec.bytes_per_token + 1e-9 for s, r in svcs]
        total = sum(demand)
        kv_tokens = [pool * d / total / s.arch.kv_spec.bytes_per_token for (s, _), d in zip(svcs, demand)]
        est = estimate_group(svcs, [self.table(s.arch.name, size) for s, _ in svcs], kv_tokens)
        cost = sum(r * (est.e2e_s[s.name] / self.norm(s.name)) ** 2 for s, r in svcs)
        self._cache[key] = (cost, est)
        return cost, est


class _Assignment:
    """Services per group with each service's rate split evenly over its replicas."""

    def __init__(self, scorer: Scorer, groups: list[tuple[int, tuple[int, ...]]]) -> None:
        self.scorer = scorer
        self.groups = groups
        self.members: list[list[str]] = [[] for _ in groups]
        self.replicas: dict[str, int] = {}

    def rate(self, name: str, replicas: int | None = None) -> float:
        return self.scorer.services[name].rate / (replicas or self.replicas.get(name, 1))

    def cost_of(self, g: int, members: Sequence[str], override: dict[str, int] | None = None) -> float:
        reps = {**self.replicas, **(override or {})}
        return self.scorer.group(len(self.groups[g][1]), [(n, self.rate(n, reps.get(n, 1))) for n in members])[0]

    def total(self) -> float:
        return sum(self.cost_of(g, m) for g, m in enumerate(self.members))

    def plan(self, algorithm: str, search_s: float) -> PlacementPlan:
        out = []
        for g, ((node, devs), mem) in enumerate(zip(self.groups, self.members)):
            _, est = self.scorer.group(len(devs), [(n, self.rate(n)) for n in mem])
            pred = tuple((n, est.e2e_s[n]) for n in mem) if est else ()
            out.append(GroupPlan(node, devs, tuple(mem), pred))
        placed = all(n in self.replicas for n in self.scorer.services)
        obj = self.total() / self.scorer.total_rate if placed else math.inf
        return PlacementPlan(algorithm, tuple(out), obj, search_s)


def _assign(scorer: Scorer, groups: list[tuple[int, tuple[int, ...]]], replicate: bool,
            max_replica_candidates: int = 6) -> _Assignment | None:
    """Stage 2 on one partition; None when some service fits no group."""
    a = _Assignment(scorer, groups)
    order = sorted(scorer.services.values(), key=lambda s: (-(scorer.cluster.min_group_size(s.arch) or 0),
                                                            -s.rate * scorer.alone_s(s.name)))
    for s in order:
        best = None
        empty_sizes: set[int] = set()
        for g, (_, devs) in enumerate(groups):
            size = len(devs)
            if not a.members[g]:
                if size in empty_sizes:
                    continue  # empty groups of one size are interchangeable
                empty_sizes.add(size)
            if not scorer.fits(size, a.members[g] + [s.name]):
                continue
            a.replicas[s.name] = 1
            delta = a.cost_of(g, a.members[g] + [s.name]) - a.cost_of(g, a.members[g])
            del a.replicas[s.name]
            key = (delta, size, g)
            if best is None or key < best:
                best = key
        if best is None:
            return None
        a.members[best[2]].append(s.name)
        a.replicas[s.name] = 1
    if replicate:
        _replicate(a, max_replica_candidates)
    return a


def _replicate(a: _Assignment, max_candidates: int) -> None:
    """Add the replica that lowers the predicted objective most, while one does (by more
    than 1e-4 per request: an overloaded service elsewhere must not stop the others)."""
    scorer = a.scorer
    while True:
        contrib: dict[str, float] = {}
        for g, mem in enumerate(a.members):
            _, est = scorer.group(len(a.groups[g][1]), [(n, a.rate(n)) for n in mem])
            for n in mem:
                contrib[n] = contrib.get(n, 0.0) + a.rate(n) * est.e2e_s[n] / scorer.norm(n)
        cands = sorted(contrib, key=lambda n: -contrib[n])[:max_candidates]
        best = None
        for n in cands:
            k = a.replicas[n] + 1
            hosts = [g for g, mem in enumerate(a.members) if n in mem]
            base = sum(a.cost_of(g, a.members[g]) for g in hosts)
            new_hosts = sum(a.cost_of(g, a.members[g], {n: k}) for g in hosts)
            empty_sizes: set[int] = set()
            for g, (_, devs) in enumerate(a.groups):
                if n in a.members[g]:
                    continue
                if not a.members[g]:
                    if len(devs) in empty_sizes:
                        continue
                    empty_sizes.add(len(devs))
                if not scorer.fits(len(devs), a.members[g] + [n]):
                    continue
                delta = new_hosts - base + a.cost_of(g, a.members[g] + [n], {n: k}) - a.cost_of(g, a.members[g])
                if best is None or delta < best[0]:
                    best = (delta, n, g)
        if best is None or best[0] >= -1e-4 * scorer.total_rate:
            return
        _, n, g = best
        a.members[g].append(n)
        a.replicas[n] += 1


def candidate_partitions(cluster: ClusterSpec) -> list[tuple[tuple[int, ...], ...]]:
    """The uniform partitions (every node split alike), the stage-1 starting points."""
    return [(p,) * cluster.num_nodes for p in node_partitions(cluster.devices_per_node)]


def place_seallm(services: Sequence[ServiceLoad], cluster: ClusterSpec, max_rounds: int = 8,
                 objective: str = "slowdown", finalists: int = 3,
                 chunk_tokens: int | None = DEFAULT_CHUNK_TOKENS) -> PlacementPlan:
    """SeaLLM's two-stage placement (module docstring).

    Stage 1 scores partitions by stage 2 without replicas: the uniform ones and vLLM's
    dedicated layout (so the search starts from the plan of the simplest baseline), then
    climbs from the best: a move re-splits one node (a partition from
    :func:`node_partitions`), kept when it lowers the prediction; at most ``max_rounds``
    moves. The ``finalists`` best partitions seen get stage 2 with replicas; the best plan
    wins. ``objective``: what is minimized; ``chunk_tokens``: the scheduler's token budget
    (:class:`Scorer`).

    Raises:
        ValueError: no partition holds every service (a model larger than a node's memory),
            or an unknown objective.
    """
    t0 = time.perf_counter()
    scorer = Scorer(cluster, services, objective, chunk_tokens)
    parts = node_partitions(cluster.devices_per_node)
    seen: dict[tuple, float] = {}

    def score(partition) -> float:
        partition = tuple(sorted(partition, reverse=True))
        if partition not in seen:
            a = _assign(scorer, groups_of(cluster, partition), replicate=False)
            seen[partition] = math.inf if a is None else a.total()
        return seen[partition]

    starts = candidate_partitions(cluster)
    try:
        starts.append(_layout(cluster, place_dedicated(services, cluster, chunk_tokens)))
    except ValueError:
        pass  # too few devices for one dedicated replica each
    best_p, best = None, math.inf
    for p in starts:
        v = score(p)
        if v < best:
            best_p, best = tuple(sorted(p, reverse=True)), v
    if best_p is None:
        raise ValueError("no partition of the cluster holds every service: "
                         + ", ".join(f"{s.name} ({s.arch.name}, {s.arch.weights_bytes / 2**30:.0f} GiB)" for s in services))
    for _ in range(max_rounds):
        moved = False
        for node, q in itertools.product(range(cluster.num_nodes), parts):
            if q == best_p[node]:
                continue
            cand = tuple(sorted(best_p[:node] + (q,) + best_p[node + 1:], reverse=True))
            v = score(cand)
            if v < best * (1 - 1e-6):
                best_p, best, moved = cand, v, True
                break
        if not moved:
            break
    plans = []
    for p in sorted((p for p, v in seen.items() if math.isfinite(v)), key=lambda p: seen[p])[:max(1, finalists)]:
        a = _assign(scorer, groups_of(cluster, p), replicate=True)
        plans.append((a.total(), len(plans), a))
    return min(plans)[2].plan("seallm", time.perf_counter() - t0)


def place_on_groups(services: Sequence[ServiceLoad], cluster: ClusterSpec, plan: PlacementPlan,
                    objective: str = "slowdown", chunk_tokens: int | None = DEFAULT_CHUNK_TOKENS) -> PlacementPlan:
    """SeaLLM's stage 2 alone (services and replicas assigned as in :func:`place_seallm`)
    on the device groups of ``plan`` (its partition and TP degrees kept): the re-placement
    that moves fewest devices.

    Raises:
        ValueError: some service fits no group of ``plan``, or an unknown objective.
    """
    t0 = time.perf_counter()
    scorer = Scorer(cluster, services, objective, chunk_tokens)
    a = _assign(scorer, [(g.node, g.devices) for g in plan.groups], replicate=True)
    if a is None:
        raise ValueError("some service fits no group of the plan")
    return a.plan("seallm", time.perf_counter() - t0)


def _layout(cluster: ClusterSpec, plan: PlacementPlan) -> tuple[tuple[int, ...], ...]:
    """The node partitions of a plan's groups (spare devices as groups of one)."""
    out = []
    for node in range(cluster.num_nodes):
        sizes = [g.tensor_parallel_size for g in plan.groups if g.node == node]
        sizes += [1] * (cluster.devices_per_node - sum(sizes))
        out.append(tuple(sorted(sizes, reverse=True)))
    return tuple(out)


def place_dedicated(services: Sequence[ServiceLoad], cluster: ClusterSpec,
                    chunk_tokens: int | None = DEFAULT_CHUNK_TOKENS) -> PlacementPlan:
    """vLLM's deployment: each model alone on the smallest power-of-two group that holds it;
    then, while devices remain, one more replica (of its smallest size) for the model with
    the most work per replica (rate x served-alone latency / replicas) that still fits.
    Groups are packed into nodes largest first (first fit). ``chunk_tokens``: as
    :class:`Scorer` (for the predicted latencies only).

    Raises:
        ValueError: a model fits no group, or the cluster has too few devices for one
            replica of every model.
    """
    t0 = time.perf_counter()
    scorer = Scorer(cluster, services, chunk_tokens=chunk_tokens)
    size: dict[str, int] = {}
    for s in services:
        m = cluster.min_group_size(s.arch)
        if m is None:
            raise ValueError(f"{s.name} ({s.arch.name}) fits no group of {cluster.devices_per_node} x {cluster.device}")
        size[s.name] = m
    free = [cluster.devices_per_node] * cluster.num_nodes
    nxt = [0] * cluster.num_nodes
    groups: list[tuple[int, tuple[int, ...]]] = []
    members: list[list[str]] = []

    def put(name: str) -> bool:
        n = size[name]
        for node in range(cluster.num_nodes):
            if free[node] >= n:
                d = node * cluster.devices_per_node + nxt[node]
                groups.append((node, tuple(range(d, d + n))))
                members.append([name])
                free[node] -= n
                nxt[node] += n
                return True
        return False

    for s in sorted(services, key=lambda s: -size[s.name]):
        if not put(s.name):
            need = sum(size.values())
            raise ValueError(f"dedicated placement needs {need} devices for one replica of each of "
                             f"{len(services)} models; the cluster has {cluster.num_devices}")
    reps = dict.fromkeys(size, 1)
    while True:
        order = sorted(services, key=lambda s: -s.rate * scorer.alone_s(s.name) / reps[s.name])
        for s in order:
            if s.rate > 0 and put(s.name):
                reps[s.name] += 1
                break
        else:
            break
    a = _Assignment(scorer, groups)
    a.members = members
    a.replicas = reps
    return a.plan("dedicated", time.perf_counter() - t0)
