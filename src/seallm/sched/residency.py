"""Which models are resident on a replica: load on demand, evict idle ones, never thrash.

A replica may list more models than its device holds at once (``max_resident_models``,
``weights_memory``). A request for a listed but non-resident model is held in its queue;
this manager decides, at iteration boundaries, which model to load next and which resident
models make room for it. Two policies (torch-free; the engine executes the decisions):

``seallm`` (our design, after SeaLLM §2.5's adaptive replacement brought to one replica):
    the model loaded next is the one whose most urgent held request has the best scheduling
    key (the policy's ``priority_key``, the same order the scheduler serves in, so a load is
    ordered by the urgency of what waits for it); room comes from idle resident models (no
    running or waiting request), the one with the lowest recent arrival rate first (ties:
    idle longest). When idle models do not make room, a busy one whose every request is less
    urgent than the held one is drained (switching costs batching, so only for more urgent
    work; aging in the scheduling keys makes a held request urgent enough in time), the least
    requested first (ties: the one whose most urgent request is least urgent): its waiting
    requests stop starting, its running ones finish, then it is evicted (its held requests
    reload it later by the same rule). A drain that outlasts what preempting would cost
    (``preempt_after`` x the two models' predicted load times plus recomputing the running
    requests' context: ski rental) ends in preemption:
    the model is evicted at once and its running requests wait, to be recomputed, for its
    reload; a request is preempted so at most once, so every request makes progress.
``lru`` (the llama-swap / Ollama way, our baseline): loads in arrival order of the held
    requests; evicts the least recently used idle model; when none is idle, drains the least
    recently used one whatever waits for it.

Both: one load at a time; pinned models are never evicted; a model just loaded is not
evicted before every request that was held for it has run on it (no thrash); under ``lru``
a model with running requests is never evicted, under ``seallm`` only by an overdue drain
(a forced unload through the API aborts them instead).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from seallm.core import RequestStatus

if TYPE_CHECKING:
    from seallm.sched.scheduler import Scheduler

RESIDENCY_POLICIES = ("seallm", "lru")


@dataclass(frozen=True)
class ResidencyConfig:
    """Limits and policy of a replica's resident models.

    Attributes:
        max_resident_models: most models resident at once (None: no count limit).
        weights_memory_bytes: device bytes for resident weights (None: no byte limit).
        pinned: models never evicted (resident from the start).
        policy: ``"seallm"`` or ``"lru"`` (module docstring).
        rate_halflife_s: half-life of the arrival-rate estimate used by ``seallm`` (s).
        default_load_bandwidth: bytes/s assumed for a model's first load (before one is measured).
        preempt_after: ``seallm`` only: a model drained to make room whose running requests
            have not finished after this many times what preempting them costs (the
            predicted load times of it and of the model waiting, plus recomputing their
            context) is evicted at once, its running requests preempted (they wait in its
            queue for its reload). Ski rental: wait for the drain as long as preempting
            would cost, then preempt. None: always wait.
        default_prefill_s_per_token: recompute cost per context token until iterations of
            the replica measured it (s).

    Raises:
        ValueError: a non-positive limit or an unknown policy.
    """

    max_resident_models: int | None = None
    weights_memory_bytes: int | None = None
    pinned: frozenset[str] = field(default_factory=frozenset)
    policy: str = "seallm"
    rate_halflife_s: float = 10.0
    default_load_bandwidth: float = 1e9
    preempt_after: float | None = 1.0
    default_prefill_s_per_token: float = 1e-4

    def __post_init__(self) -> None:
        if self.max_resident_models is not None and (not isinstance(self.max_resident_models, int)
                                                     or self.max_resident_models < 1):
            raise ValueError(f"max_resident_models must be a positive integer or null, got "
                             f"{self.max_resident_models!r}")
        if self.weights_memory_bytes is not None and self.weights_memory_bytes < 1:
            raise ValueError(f"weights_memory must be positive, got {self.weights_memory_bytes!r}")
        if self.policy not in RESIDENCY_POLICIES:
            raise ValueError(f"unknown residency policy {self.policy!r}; known: {list(RESIDENCY_POLICIES)}")
        if not self.rate_halflife_s > 0 or not self.default_load_bandwidth > 0:
            raise ValueError("rate_halflife_s and default_load_bandwidth must be > 0")
        if self.preempt_after is not None and not (0 <= self.preempt_after < math.inf):
            raise ValueError(f"preempt_after must be a finite number >= 0 or null, got {self.preempt_after!r}")
        object.__setattr__(self, "pinned", frozenset(self.pinned))


@dataclass(frozen=True)
class ResidencyDecision:
    """What the engine does at this iteration boundary, in order: evict, then load.

    ``evict``: ``(model, abort)`` pairs (``abort``: its requests are aborted, a forced
    unload; else it has no running request). ``load``: the model to start loading, or None.
    """

    evict: tuple[tuple[str, bool], ...] = ()
    load: str | None = None


def initial_residents(models: Iterable[str], weights_bytes: Mapping[str, int], config: ResidencyConfig) -> list[str]:
    """The models resident at start: pinned ones, then the others in order, while they fit.

    Raises:
        ValueError: the pinned models alone exceed a limit, or a model cannot fit even alone.
    """
    models = list(models)
    unknown = config.pinned - set(models)
    if unknown:
        raise ValueError(f"pinned models {sorted(unknown)} are not in the replica's models")
    cap_n, cap_b = config.max_resident_models, config.weights_memory_bytes
    for m in models:
        if cap_b is not None and weights_bytes[m] > cap_b:
            raise ValueError(f"model {m!r} has {weights_bytes[m]} bytes of weights, more than weights_memory "
                             f"({cap_b} bytes): it could never be loaded")
    pinned = [m for m in models if m in config.pinned]
    if cap_n is not None and len(pinned) > cap_n:
        raise ValueError(f"{len(pinned)} pinned models but max_resident_models is {cap_n}")
    if cap_b is not None and sum(weights_bytes[m] for m in pinned) > cap_b:
        raise ValueError("the pinned models' weights exceed weights_memory")
    pinned_bytes = sum(weights_bytes[m] for m in pinned)
    for m in models:
        if m not in config.pinned and ((cap_n is not None and len(pinned) >= cap_n)
                                       or (cap_b is not None and pinned_bytes + weights_bytes[m] > cap_b)):
            raise ValueError(f"with the pinned models resident, model {m!r} could never be loaded")
    out, used = list(pinned), sum(weights_bytes[m] for m in pinned)
    for m in models:
        if m in out:
            continue
        if (cap_n is None or len(out) < cap_n) and (cap_b is None or used + weights_bytes[m] <= cap_b):
            out.append(m)
            used += weights_bytes[m]
    return out


class _Neg:
    """Reverses the order of a priority key (None last) inside a sort key."""

    __slots__ = ("key",)

    def __init__(self, key) -> None:
        self.key = key

    def __lt__(self, other: "_Neg") -> bool:
        if self.key is None or other.key is None:
            return self.key is not None and other.key is None
        return other.key < self.key

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Neg) and self.key == other.key


class ResidencyManager:
    """Residency state and decisions of one replica (module docstring for the rules).

    Args:
        config: limits and policy.
        weights_bytes: model -> bytes of its weights on the device (every model of the replica).
        resident: the models resident at start.
    """

    def __init__(self, config: ResidencyConfig, weights_bytes: Mapping[str, int], resident: Iterable[str]) -> None:
        self.config = config
        self.weights_bytes = dict(weights_bytes)
        self.resident: set[str] = set(resident)
        self.loading: str | None = None
        self.last_used: dict[str, float] = {m: 0.0 for m in self.weights_bytes}
        self._rate: dict[str, float] = {m: 0.0 for m in self.weights_bytes}
        self._rate_t: dict[str, float] = {m: 0.0 for m in self.weights_bytes}
        self._load_s: dict[str, float] = {}
        self._loaded_for: dict[str, set[str]] = {}
        self._drained: dict[str, float] = {}  # drained by this manager to make room -> since when (s)
        self._preempted: set[str] = set()  # ids of requests an overdue drain preempted (once each)
        self._s_per_token = config.default_prefill_s_per_token  # recompute cost estimate (s/token)
        self._measured = False
        self._unloads: dict[str, set[str] | None] = {}  # explicit unload -> ids to finish first (None: force)
        self._loads: list[str] = []  # explicit load requests, in order
        self.num_loads = 0
        self.num_evictions = 0

    # ---- what the engine reports ----------------------------------------------------------
    def on_arrival(self, model: str, now: float) -> None:
        """A request of ``model`` arrived (arrival rate and recency)."""
        tau = self.config.rate_halflife_s / math.log(2)
        dt = max(0.0, now - self._rate_t.get(model, now))
        self._rate[model] = self._rate.get(model, 0.0) * math.exp(-dt / tau) + 1.0 / tau
        self._rate_t[model] = now
        self.last_used[model] = max(self.last_used.get(model, 0.0), now)

    def on_run(self, model: str, now: float, step_s: float = 0.0, num_tokens: int = 0) -> None:
        """An iteration of ``model`` ran: ``num_tokens`` tokens in ``step_s`` seconds (an
        iteration of at least 32 tokens updates the recompute-cost estimate)."""
        self.last_used[model] = max(self.last_used.get(model, 0.0), now)
        if num_tokens >= 32 and step_s > 0:
            self._s_per_token = 0.8 * self._s_per_token + 0.2 * step_s / num_tokens if self._measured else \
                step_s / num_tokens
            self._measured = True

    def arrival_rate(self, model: str, now: float) -> float:
        """Recent arrivals of ``model`` per second (exponentially decayed)."""
        tau = self.config.rate_halflife_s / math.log(2)
        dt = max(0.0, now - self._rate_t.get(model, now))
        return self._rate.get(model, 0.0) * math.exp(-dt / tau)

    def predicted_load_s(self, model: str) -> float:
        """Seconds a load of ``model`` is expected to take: the last measured one, else its
        bytes at ``default_load_bandwidth``."""
        return self._load_s.get(model, self.weights_bytes[model] / self.config.default_load_bandwidth)

    def on_load_started(self, model: str) -> None:
        self.loading = model

    def on_loaded(self, model: str, seconds: float, weights_bytes: int | None, held: Iterable[str]) -> None:
        """``model`` is resident; ``held``: ids of its requests that waited for it."""
        self.loading = None
        self.resident.add(model)
        self._load_s[model] = seconds
        if weights_bytes:
            self.weights_bytes[model] = weights_bytes
        self._loaded_for[model] = set(held)
        if model in self._loads:
            self._loads.remove(model)
        self.num_loads += 1

    def on_load_failed(self, model: str) -> None:
        self.loading = None
        if model in self._loads:
            self._loads.remove(model)

    def on_unloaded(self, model: str) -> None:
        self.resident.discard(model)
        self._drained.pop(model, None)
        self._unloads.pop(model, None)
        self._loaded_for.pop(model, None)
        self.num_evictions += 1

    # ---- explicit requests (API) ----------------------------------------------------------
    def request_load(self, model: str) -> None:
        """Load ``model`` as soon as room can be made (an operator asked)."""
        self._unloads.pop(model, None)
        if model not in self.resident and model != self.loading and model not in self._loads:
            self._loads.append(model)

    def request_unload(self, model: str, force: bool, sched: "Scheduler") -> None:
        """Unload ``model``: with ``force`` at the next boundary (its requests are aborted),
        else once the requests it has now have finished (new ones are held for a reload).

        Raises:
            ValueError: ``model`` is pinned.
        """
        if model in self.config.pinned:
            raise ValueError(f"model {model!r} is pinned (pinned: true) and cannot be unloaded")
        if model in self._loads:
            self._loads.remove(model)
        if force:
            self._unloads[model] = None
        else:
            ids = {r.request_id for r in (*sched.running[model], *sched.waiting[model])}
            self._unloads[model] = ids
            sched.set_admission(model, ids)

    def has_pending(self) -> bool:
        """A load under way, or an asked-for load or unload not done yet."""
        return self.loading is not None or bool(self._unloads) or any(m not in self.resident for m in self._loads)

    def quiet(self) -> bool:
        """Nothing pending and nothing drained: with no request waiting, :meth:`step`
        decides nothing and changes nothing (a simulator may fast-forward over it)."""
        return not self.has_pending() and not self._drained

    def pending_unload(self, model: str) -> bool:
        return model in self._unloads

    # ---- the decision ---------------------------------------------------------------------
    def step(self, sched: "Scheduler", now: float) -> ResidencyDecision:
        """This boundary's evictions and load (see the module docstring). May restrict
        admission of models it drains (``sched.set_admission``)."""
        evict: list[tuple[str, bool]] = []
        for m, ids in list(self._unloads.items()):
            if m not in self.resident:
                self._unloads.pop(m)
                continue
            if ids is None:
                evict.append((m, True))
            elif not sched.running[m] and not any(i in sched.requests for i in ids):
                evict.append((m, False))
        gone = {m for m, _ in evict}
        if self.loading is not None:
            return ResidencyDecision(tuple(evict))
        target = self._target(sched, now)
        if target is None:
            self._undrain(sched, keep=set())
            return ResidencyDecision(tuple(evict))
        staying = self.resident - gone
        idle = [m for m in staying if self._evictable(m, sched) and (not sched.waiting[m] or m in self._drained)]
        idle.sort(key=lambda m: self._evict_rank(m, now))
        chosen: list[str] = []
        for m in idle:
            if self._fits(staying - set(chosen), target):
                break
            chosen.append(m)
        if self._fits(staying - set(chosen), target):
            self._undrain(sched, keep=set())
            return ResidencyDecision(tuple(evict) + tuple((m, False) for m in chosen), target)
        # Not enough idle room: drain busy models (no new starts) until they would make it.
        busy = [m for m in staying if m not in chosen and m not in self.config.pinned
                and not self._protected(m, sched)]
        if self.config.policy == "seallm":
            # Only models all of whose work is less urgent than the target's most urgent held
            # request (switching costs batching: drain only for more urgent work); least
            # requested first, then the one whose most urgent request is least urgent.
            head = self._head_key(target, sched, now)
            keyed = [(self.arrival_rate(m, now), _Neg(k), m) for m in busy
                     if (k := self._most_urgent(m, sched, now)) is None or head is None or head < k]
            busy = [m for _, _, m in sorted(keyed)]
        else:
            busy.sort(key=lambda m: self.last_used.get(m, 0.0))
        drain: set[str] = set()
        for m in busy:
            if self._fits(staying - set(chosen) - drain, target):
                break
            drain.add(m)
        if not self._fits(staying - set(chosen) - drain, target):
            drain = set()  # cannot make room now: drain nobody, wait for work to finish
        self._undrain(sched, keep=drain)
        for m in drain - self._drained.keys():
            sched.set_admission(m, ())
            self._drained[m] = now
        preempt = self._overdue(drain, target, sched, now)
        if preempt and self._fits(staying - set(chosen) - drain, target):
            # Every drained model is overdue: evict them now, preempting their running requests.
            self._preempted = {i for i in self._preempted if i in sched.requests}
            self._preempted |= {r.request_id for m in drain for r in sched.running[m]}
            return ResidencyDecision(tuple(evict) + tuple((m, False) for m in chosen)
                                     + tuple((m, False) for m in sorted(drain)), target)
        return ResidencyDecision(tuple(evict))

    def _overdue(self, drain: set[str], target: str, sched: "Scheduler", now: float) -> bool:
        """``seallm``: every model in ``drain`` has drained longer than ``preempt_after`` x
        (its predicted load time + the target's + recomputing its running requests'
        context at the measured seconds per token), is not protected by the requests it was
        loaded for, and runs no request an overdue drain preempted before (each request is
        preempted so at most once: every request makes progress)."""
        k = self.config.preempt_after
        if self.config.policy != "seallm" or k is None or not drain:
            return False
        for m in drain:
            recompute = self._s_per_token * sum(r.num_computed_tokens for r in sched.running[m])
            bound = k * (self.predicted_load_s(m) + self.predicted_load_s(target) + recompute)
            if now - self._drained.get(m, now) < bound or self._protected(m, sched):
                return False
            if any(r.request_id in self._preempted for r in sched.running[m]):
                return False
        return True

    # ---- helpers --------------------------------------------------------------------------
    def _target(self, sched: "Scheduler", now: float) -> str | None:
        for m in self._loads:
            if m not in self.resident:
                return m
        held = [m for m in sched.waiting if m not in self.resident and sched.waiting[m]]
        if not held:
            return None
        if self.config.policy == "seallm":
            return min(held, key=lambda m: self._head_key(m, sched, now))
        return min(held, key=lambda m: (min(r.arrival_time for r in sched.waiting[m]), m))

    def _head_key(self, model: str, sched: "Scheduler", now: float):
        q = sched.waiting[model]
        return min((sched.policy.priority_key(r, now) for r in q), default=None)

    def _most_urgent(self, model: str, sched: "Scheduler", now: float):
        key = sched.policy.priority_key
        return min((key(r, now) for r in (*sched.running[model], *sched.waiting[model])), default=None)

    def _evictable(self, model: str, sched: "Scheduler") -> bool:
        """Unpinned, not protected by the requests it was loaded for, no running request."""
        if model in self.config.pinned or sched.running[model]:
            return False
        return not self._protected(model, sched)

    def _protected(self, model: str, sched: "Scheduler") -> bool:
        """Some request ``model`` was loaded for has not run on it yet (no thrash)."""
        held = self._loaded_for.get(model)
        if held:
            held &= {i for i in held if i in sched.requests and sched.requests[i].status is not RequestStatus.RUNNING}
            if held:
                return True
        return False

    def _evict_rank(self, model: str, now: float) -> tuple:
        if self.config.policy == "seallm":
            return (self.arrival_rate(model, now), self.last_used.get(model, 0.0), model)
        return (self.last_used.get(model, 0.0), model)

    def _fits(self, resident: set[str], target: str) -> bool:
        c = self.config
        if c.max_resident_models is not None and len(resident) + 1 > c.max_resident_models:
            return False
        if c.weights_memory_bytes is not None:
            if sum(self.weights_bytes[m] for m in resident) + self.weights_bytes[target] > c.weights_memory_bytes:
                return False
        return True

    def _undrain(self, sched: "Scheduler", keep: set[str]) -> None:
        for m in self._drained.keys() - keep:
            if m not in self._unloads:
                sched.set_admission(m, None)
        self._drained = {m: t for m, t in self._drained.items() if m in keep}
