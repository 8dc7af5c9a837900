"""Adaptive replacement: when to re-run placement as traffic drifts (torch-free).

SeaLLM §2.5 (``shared/reference/multi-model-sharing.md``): watch per-service rates over a
sliding window, re-place when the predicted latency gain of the new plan exceeds the cost of
moving models, and choose the window (the replacement interval) by how fast traffic moves.
The paper gives the rule, not the estimators; ours:

* **Rates** (:class:`RateMonitor`): arrivals per service counted over a window ``w`` ending
  now (req/s); mean lengths per service over everything seen.
* **Window** (adaptive): every ``check_every_s`` seconds each candidate window of the
  geometric set ``windows_s`` is scored by how well the rates of the window that ended
  ``check_every_s`` ago predicted the rates seen since (relative L1 error, averaged over the
  last ``error_history`` checks); the window with the least error wins (ties: the longest).
  Steady traffic favours long windows (less Poisson noise), drifting traffic short ones
  (less lag). The chosen window is also the horizon over which a gain is counted.
* **Trigger**: a re-plan is tried when the popularity shares moved by more than
  ``shift_threshold`` (total variation distance to the shares of the last re-plan tried),
  when the total rate moved by more than that factor, or one window after the last try.
* **Gain** ``dL = lambda * w * (E_now - E_new)``: request-seconds of latency saved over the
  horizon, with ``E`` the rate-weighted mean E2E that the placement's queueing estimate
  (:func:`~seallm.cluster.estimate.estimate_group`) predicts for the current and the new
  plan under the window's rates (s).
* **Switching cost** ``C`` (request-seconds): the requests in flight on a retired group
  (Little's law: rate x predicted E2E) migrate to the new groups on its devices, which are
  down for ``D`` = their new weights / (TP x load bandwidth) (each device loads its shard
  from the host weight cache) plus the recompute of the migrated prefills; each migrated
  request waits ``D``, and requests of a service with no unchanged replica wait ``D / 2`` on
  average (``rate x D^2 / 2``).
* **Decision**: switch when ``dL - C > 0`` and the gain is at least ``min_gain`` of the
  current plan's predicted latency (the estimate's noise must not move models back and
  forth), after at least two windows of history, and only to a plan that overloads no group
  under the rates of the other candidate windows (up to 4x the chosen one) where the
  current plan does not: a plan tuned to a window that saw a passing shift must survive the
  traffic coming back, so popularity that keeps rotating does not make the cluster chase
  it, while a lasting shift does.

``fixed`` mode is AlpaServe's Clockwork++ baseline (§2.5, ``sr-replace-60``): every
``interval_s`` seconds re-place with the rates of the last interval and switch whenever the
plan differs, whatever the cost. ``none`` never re-places.

New plans are aligned to the old one (:func:`align_plan`): nodes and same-sized groups are
relabelled so that groups which keep their models keep their devices, and only real changes
move weights.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from seallm.cluster.estimate import ServiceLoad
from seallm.cluster.placement import DEFAULT_CHUNK_TOKENS, Scorer
from seallm.cluster.spec import ClusterSpec, GroupPlan, PlacementPlan

MODES = ("none", "fixed", "adaptive")


@dataclass(frozen=True)
class ReplacementConfig:
    """When and how a cluster re-places its services (module docstring).

    Attributes:
        mode: ``none``, ``fixed`` (every ``interval_s``, AlpaServe's Clockwork++) or
            ``adaptive`` (SeaLLM's rule).
        interval_s: fixed mode's interval (s; the reference's ``sr-replace-60``: 60).
        check_every_s: adaptive mode: how often the monitor looks (s).
        windows_s: adaptive mode: the candidate sliding windows (s), a geometric set.
        shift_threshold: total variation distance of the popularity shares (and relative
            change of the total rate) that triggers a re-plan.
        min_gain: smallest predicted gain, as a share of the current plan's predicted
            latency over the horizon, worth a switch.
        load_bandwidth: bytes/s one device loads weights at (None: the device's host link,
            weights coming from the host weight cache).
        error_history: checks over which a window's prediction error is averaged.

    Raises:
        ValueError: an unknown mode or a non-positive time.
    """

    mode: str = "adaptive"
    interval_s: float = 60.0
    check_every_s: float = 10.0
    windows_s: tuple[float, ...] = (15.0, 30.0, 60.0, 120.0, 240.0)
    shift_threshold: float = 0.15
    min_gain: float = 0.05
    load_bandwidth: float | None = None
    error_history: int = 6

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown replacement mode {self.mode!r}; known: {list(MODES)}")
        times = (self.interval_s, self.check_every_s, *self.windows_s)
        if not self.windows_s or not all(x > 0 and math.isfinite(x) for x in times):
            raise ValueError("replacement intervals, checks and windows must be positive seconds")
        if self.load_bandwidth is not None and not self.load_bandwidth > 0:
            raise ValueError(f"load_bandwidth must be > 0 bytes/s, got {self.load_bandwidth}")
        if not (self.shift_threshold >= 0 and self.min_gain >= 0 and self.error_history >= 1):
            raise ValueError("shift_threshold and min_gain must be >= 0, error_history >= 1")


class RateMonitor:
    """Arrivals per service, for rates over sliding windows.

    ``services``: the loads the cluster was first placed with (names, architectures and the
    lengths used until a service has requests of its own). Arrivals must be observed in time
    order.
    """

    def __init__(self, services: Sequence[ServiceLoad]) -> None:
        self.base = {s.name: s for s in services}
        self._times: dict[str, list[float]] = {s.name: [] for s in services}
        self._len: dict[str, list[float]] = {s.name: [0.0, 0.0] for s in services}

    def observe(self, service: str, t: float, input_len: int, output_len: int) -> None:
        """One arrival of ``service`` at ``t`` (s) with its prompt and output tokens."""
        self._times[service].append(t)
        acc = self._len[service]
        acc[0] += input_len
        acc[1] += output_len

    def rates(self, t: float, window_s: float) -> dict[str, float]:
        """Per service, arrivals in ``(t - window_s, t]`` per second (req/s)."""
        lo = t - window_s
        return {n: (bisect.bisect_right(ts, t) - bisect.bisect_right(ts, lo)) / window_s
                for n, ts in self._times.items()}

    def loads(self, t: float, window_s: float) -> list[ServiceLoad]:
        """Service loads at ``t``: rates over the window, mean lengths over all arrivals."""
        rates = self.rates(t, window_s)
        out = []
        for n, base in self.base.items():
            k = len(self._times[n])
            i, o = (self._len[n][0] / k, self._len[n][1] / k) if k else (base.input_len, base.output_len)
            out.append(ServiceLoad(n, base.arch, rates[n], max(i, 1.0), max(o, 1.0)))
        return out


def rate_shift(a: Sequence[ServiceLoad], b: Sequence[ServiceLoad]) -> float:
    """How far two sets of loads are apart: the larger of the total variation distance of
    the popularity shares and the relative change of the total rate (0: same traffic)."""
    ra, rb = {s.name: s.rate for s in a}, {s.name: s.rate for s in b}
    ta, tb = sum(ra.values()), sum(rb.values())
    if ta <= 0 or tb <= 0:
        return 0.0 if ta == tb else math.inf
    tv = 0.5 * sum(abs(ra.get(n, 0.0) / ta - rb.get(n, 0.0) / tb) for n in set(ra) | set(rb))
    return max(tv, abs(tb - ta) / ta)


def _group_loads(plan: PlacementPlan, scorer: Scorer):
    """(group, [(service, rate req/s)]) for every group of ``plan`` holding a model, each
    service's rate split evenly over its replicas (the scorer's loads)."""
    counts = Counter(m for g in plan.groups for m in g.models)
    for g in plan.groups:
        if g.models:
            yield g, [(m, scorer.services[m].rate / counts[m]) for m in g.models]


def predicted_latency(plan: PlacementPlan, scorer: Scorer) -> float:
    """Rate-weighted mean E2E latency (s) the queueing estimate predicts for ``plan`` under
    the scorer's loads (each service's rate split evenly over its replicas; an overloaded
    group's services get the estimate's overload latency, which grows with the overload);
    inf when a service with traffic is placed nowhere."""
    placed = {m for g in plan.groups for m in g.models}
    if any(s.rate > 0 and n not in placed for n, s in scorer.services.items()):
        return math.inf
    total = 0.0
    for g, members in _group_loads(plan, scorer):
        _, est = scorer.group(g.tensor_parallel_size, members)
        total += sum(r * est.e2e_s[m] for m, r in members)
    return total / scorer.total_rate


def overloaded(plan: PlacementPlan, scorer: Scorer) -> bool:
    """Whether some group of ``plan`` with traffic is predicted saturated (or out of KV
    memory) under the scorer's loads."""
    return any(sum(r for _, r in members) > 0 and not scorer.group(g.tensor_parallel_size, members)[1].feasible
               for g, members in _group_loads(plan, scorer))


def align_plan(old: PlacementPlan, new: PlacementPlan, cluster: ClusterSpec) -> PlacementPlan:
    """``new`` with its nodes and same-sized groups relabelled so that as many groups as
    possible keep both their devices and their models from ``old`` (a placement from
    scratch may put the same group on another node). Nodes are matched greedily by the
    number of (size, models) groups they share; within a node, a group that ``old`` had
    with the same models and size takes that group's devices when the new layout has a
    group of that size there. The result is a valid plan with the same groups up to device
    labels."""
    per = cluster.devices_per_node

    def shape(g: GroupPlan) -> tuple[int, frozenset[str]]:
        return (g.tensor_parallel_size, frozenset(g.models))

    old_nodes = [Counter(shape(g) for g in old.groups if g.node == k and g.models) for k in range(cluster.num_nodes)]
    new_nodes = [[g for g in new.groups if g.node == k] for k in range(cluster.num_nodes)]
    pairs = sorted(((-sum((old_nodes[o] & Counter(shape(g) for g in new_nodes[n] if g.models)).values()), n, o)
                    for n, o in itertools.product(range(cluster.num_nodes), repeat=2)))
    target: dict[int, int] = {}
    used: set[int] = set()
    for _, n, o in pairs:
        if n not in target and o not in used:
            target[n] = o
            used.add(o)
    out: list[GroupPlan] = []
    for n, groups in enumerate(new_nodes):
        o = target[n]
        shift = (o - n) * per
        moved = [replace(g, node=o, devices=tuple(d + shift for d in g.devices)) for g in groups]
        # within the node, give each group the devices its old twin had, swapping device sets
        # between groups of the same size (the layout of sizes stays a valid partition)
        slots = {g.devices for g in moved}
        twins = {shape(g): g.devices for g in old.groups if g.node == o and g.models}
        taken: dict[int, tuple[int, ...]] = {}
        free = list(range(len(moved)))
        for i, g in enumerate(moved):
            want = twins.get(shape(g))
            if g.models and want in slots and want not in taken.values():
                taken[i] = want
                free.remove(i)
        rest = [g.devices for g in moved if g.devices not in taken.values()]
        for i in free:
            size = moved[i].tensor_parallel_size
            j = next(k for k, d in enumerate(rest) if len(d) == size)
            taken[i] = rest.pop(j)
        out += [replace(g, devices=taken[i]) for i, g in enumerate(moved)]
    out.sort(key=lambda g: g.devices[0])
    return replace(new, groups=tuple(out))


@dataclass(frozen=True)
class PlanChange:
    """How a plan differs from the one before it.

    Attributes:
        kept: groups of the new plan identical (devices and models) to an old group.
        retired: old groups that stop serving. added: new groups that start.
    """

    kept: tuple[GroupPlan, ...]
    retired: tuple[GroupPlan, ...]
    added: tuple[GroupPlan, ...]


def plan_change(old: PlacementPlan, new: PlacementPlan) -> PlanChange:
    """Which groups of ``old`` survive in ``new`` (same devices, same models), which retire,
    which are new (groups without models are ignored)."""
    key = lambda g: (g.devices, frozenset(g.models))  # noqa: E731
    olds = {key(g): g for g in old.groups if g.models}
    news = {key(g): g for g in new.groups if g.models}
    return PlanChange(tuple(news[k] for k in news if k in olds), tuple(olds[k] for k in olds if k not in news),
                      tuple(news[k] for k in news if k not in olds))


def load_time_s(group: GroupPlan, services: dict[str, ServiceLoad], bandwidth: float) -> float:
    """Seconds until ``group``'s weights are on its devices: each device loads its
    1/TP shard of every model at ``bandwidth`` bytes/s, the devices in parallel."""
    return sum(services[m].arch.weights_bytes for m in group.models) / group.tensor_parallel_size / bandwidth


def switching_cost(change: PlanChange, old: PlacementPlan, scorer: Scorer, bandwidth: float) -> float:
    """Predicted request-seconds of latency the moves of ``change`` add (module docstring).

    A retired group's in-flight requests (Little's law: rate x predicted E2E per service)
    migrate to the new groups on its devices (split evenly), which are down for their
    weights' load plus the recompute of those requests' prefills (s of device time); each
    migrated request waits that long, and the new requests of a service with no unchanged
    replica wait half of it on average (``rate x D^2 / 2``)."""
    svc = scorer.services
    new_counts = Counter(m for g in change.kept + change.added for m in g.models)
    served_through = {m for g in change.kept for m in g.models}
    old_counts = Counter(m for g in old.groups for m in g.models)
    down = {g.devices: load_time_s(g, svc, bandwidth) for g in change.added}
    moved = dict.fromkeys(down, 0.0)  # requests migrated onto each new group
    for g in change.retired:
        members = [(m, svc[m].rate / old_counts[m]) for m in g.models]
        _, est = scorer.group(g.tensor_parallel_size, members)
        n, redo = 0.0, 0.0
        for m, r in members:
            k = min(r * est.e2e_s[m], 256.0)
            n += k
            redo += k * scorer.table(svc[m].arch.name, g.tensor_parallel_size).prefill_s(
                svc[m].input_len + svc[m].output_len / 2)
        targets = [devs for devs in down if set(devs) & set(g.devices)]
        for devs in targets:
            moved[devs] += n / len(targets)
            down[devs] += redo / len(targets)
    cost = 0.0
    for g in change.added:
        d = down[g.devices]
        lam = sum(svc[m].rate / new_counts[m] for m in g.models if m not in served_through)
        cost += lam * d * d / 2 + moved[g.devices] * d
    return cost


@dataclass(frozen=True)
class ReplacementDecision:
    """One look at the traffic.

    Attributes:
        time_s: when (s). window_s: the rate window used (s). shift: :func:`rate_shift`
            from the current plan's loads. gain_s, cost_s: predicted request-seconds saved
            and added (0 when no plan was tried). switched: the new plan was taken.
        moved_groups: groups retired plus added. predicted_e2e_s: the current plan's
            predicted mean E2E under the window's rates, and the new plan's (s).
    """

    time_s: float
    window_s: float
    shift: float
    gain_s: float = 0.0
    cost_s: float = 0.0
    switched: bool = False
    moved_groups: int = 0
    predicted_e2e_s: tuple[float, float] = (math.nan, math.nan)


class Replanner:
    """Decides when a cluster re-places (module docstring), for the simulator now and a live
    cluster later: feed it arrivals (:meth:`observe`), call :meth:`check` at
    :attr:`next_check_s`, and apply the plan it returns.

    Args:
        config: the mode and its parameters. cluster: the devices.
        services: the loads the first plan was made with. plan: the first plan.
        place: the placement algorithm, loads -> plan (the system's own).
        chunk_tokens: the scheduler's token budget (for the estimates).
        reassign: adaptive mode: ``(loads, current plan) -> plan`` keeping the current
            device groups (:func:`~seallm.cluster.placement.place_on_groups`); the candidate
            with the larger net gain (gain - cost) of the two is the one weighed.
    """

    def __init__(self, config: ReplacementConfig, cluster: ClusterSpec, services: Sequence[ServiceLoad],
                 plan: PlacementPlan, place: Callable[[list[ServiceLoad]], PlacementPlan],
                 chunk_tokens: int | None = DEFAULT_CHUNK_TOKENS,
                 reassign: Callable[[list[ServiceLoad], PlacementPlan], PlacementPlan] | None = None) -> None:
        self.config = config
        self.cluster = cluster
        self.plan = plan
        self.plan_loads = list(services)
        self._tried_loads = self.plan_loads  # the loads of the last re-plan tried
        self.place = place
        self.reassign = reassign
        self.chunk_tokens = chunk_tokens
        self.monitor = RateMonitor(services)
        self.bandwidth = config.load_bandwidth or cluster.spec.host_link_bandwidth
        self.decisions: list[ReplacementDecision] = []
        self.window_s = config.interval_s if config.mode == "fixed" else min(config.windows_s)
        self.last_plan_s = 0.0
        self._errors: dict[float, deque[float]] = {w: deque(maxlen=config.error_history) for w in config.windows_s}
        step = config.interval_s if config.mode == "fixed" else config.check_every_s
        self.next_check_s = math.inf if config.mode == "none" else step

    def observe(self, service: str, t: float, input_len: int, output_len: int) -> None:
        """A request of ``service`` arrived at ``t`` (s; in time order)."""
        self.monitor.observe(service, t, input_len, output_len)

    def _choose_window(self, t: float) -> float:
        h = self.config.check_every_s
        seen = self.monitor.rates(t, h)
        total = sum(seen.values())
        for w, errs in self._errors.items():
            if t - h >= w and total > 0:
                past = self.monitor.rates(t - h, w)
                errs.append(sum(abs(past[n] - seen[n]) for n in seen) / total)
        scored = [(sum(e) / len(e), -w) for w, e in self._errors.items() if e]
        return -min(scored)[1] if scored else min(self.config.windows_s)

    def check(self, t: float) -> PlacementPlan | None:
        """Look at the traffic at ``t`` (s) and return the plan to switch to (aligned to
        the current one), or None to keep the current plan. Schedules the next check."""
        cfg = self.config
        if cfg.mode == "fixed":
            self.next_check_s = t + cfg.interval_s
            window = cfg.interval_s
        else:
            self.next_check_s = t + cfg.check_every_s
            window = self.window_s = self._choose_window(t)
        loads = self.monitor.loads(t, min(window, t) or window)
        shift = rate_shift(self.plan_loads, loads)
        if sum(s.rate for s in loads) <= 0:
            self.decisions.append(ReplacementDecision(t, window, shift))
            return None
        if cfg.mode == "adaptive" and rate_shift(self._tried_loads, loads) <= cfg.shift_threshold \
                and t - self.last_plan_s < window:
            self.decisions.append(ReplacementDecision(t, window, shift))
            return None
        scorer = Scorer(self.cluster, loads, chunk_tokens=self.chunk_tokens)
        e_now = predicted_latency(self.plan, scorer)
        total = sum(s.rate for s in loads)
        cands = [self.place(loads)]
        if cfg.mode == "adaptive" and self.reassign is not None:
            try:
                cands.append(self.reassign(loads, self.plan))
            except ValueError:
                pass  # the current groups cannot hold every service
        # adaptive: the rates of the other candidate windows up to 4x the chosen one, each a
        # history the traffic may return to: a new plan must not overload under any of them
        # where the current plan does not (a hedge against chasing a passing shift)
        others = []
        if cfg.mode == "adaptive":
            for w in cfg.windows_s:
                if w != window and w <= t and w <= 4 * window:
                    ls = self.monitor.loads(t, w)
                    if sum(x.rate for x in ls) > 0:
                        others.append(Scorer(self.cluster, ls, chunk_tokens=self.chunk_tokens))
        best = None
        for k, cand in enumerate(cands):
            new = align_plan(self.plan, cand, self.cluster)
            e_new = predicted_latency(new, scorer)
            change = plan_change(self.plan, new)
            gain = total * window * (e_now - e_new) if math.isfinite(e_now) else math.inf
            rel = (e_now - e_new) / e_now if math.isfinite(e_now) and e_now > 0 else math.inf
            if any(overloaded(new, sc) and not overloaded(self.plan, sc) for sc in others):
                gain = rel = -math.inf
            cost = switching_cost(change, self.plan, scorer, self.bandwidth)
            key = (gain - cost, -k)
            if best is None or key > best[0]:
                best = (key, new, e_new, change, gain, cost, rel)
        _, new, e_new, change, gain, cost, rel = best
        moved = len(change.retired) + len(change.added)
        if cfg.mode == "fixed":
            switch = moved > 0
        else:
            # at least two windows of history: one window alone cannot tell a burst from a shift
            switch = bool(others) and moved > 0 and gain - cost > 0 and rel >= cfg.min_gain
        self.last_plan_s, self._tried_loads = t, loads
        self.decisions.append(ReplacementDecision(t, window, shift, gain, cost, switch, moved, (e_now, e_new)))
        if not switch:
            return None
        self.plan, self.plan_loads = new, loads
        return new
