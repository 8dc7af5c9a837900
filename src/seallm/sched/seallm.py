"""SeaLLM's latency-optimized, service-aware scheduling with the doubling budget (DB).

Reference: SeaLLM (arXiv 2504.15720) §3; the rules below follow
``shared/reference/multi-model-sharing.md`` §2.3, which marks them as our design where the
paper's listing is not available:

1. Each request gets an estimated execution time Ê from its service profile (prefill of its
   prompt + an output-length statistic x the iteration time) and an initial budget B = Ê
   (service-agnostic ablation: the same budget for every service). A request held for a
   model load (its model is not resident) adds the predicted load time to Ê.
2. Priority key (smaller runs first). With ``demotion_order="budget"`` (default):
   ``(API priority - boosts, B - attained, arrival)``: a demoted request competes by its
   remaining (doubled) budget ("priority gradually decreased"), so for seats, batch order,
   KV pages and preemption victims, which are decided across all models of the device, a
   short service's demoted request still outranks a long service's fresh one. With
   ``demotion_order="level"`` (strict MLFQ): ``(API priority - boosts beyond the level,
   level - boosts (down to 0), B - attained, arrival)``. Which model runs the next iteration
   follows its most urgent request's class ``(effective API class, level)``, where aging
   lifts the class at most to the best API priority among the runnable requests (rule 4):
   a model with undemoted work goes before one whose requests were all demoted; models tied
   on the class take turns (ranking models by the full key starves the other models'
   decode batches).
   Among models tied on the effective API class, one with runnable work that other models
   have passed over for ``max_model_skips`` iterations in a row goes first whatever its level
   (off by default: with 1 they take turns one iteration each, as under FCFS, so a model
   left with only demoted long requests decodes them at FCFS's pace instead of only when
   the others run dry, the P99 tail at low load; but that gives up cross-model priority and
   the normalized-latency gain, see README "Overload"). The tail guard (rule 4) is the
   milder form that is on by default.
3. After each iteration in which a request ran, its attained service grows by the work done
   for it, in the units of Ê: its prefill tokens x the profile's prefill time per token, or
   one iteration time for a decode token (``accounting="work"``, the default; the
   reference's "iterations x τ̄" extended to chunked prefill). ``accounting="iteration"``
   charges the whole iteration's time instead, which over-charges a request that shares a
   long prefill iteration. When attained >= B it is demoted one level and its budget
   doubles (fixed-budget ablation: stays B).
4. Aging (MLFQ priority boost, extended across API priorities; our design): each stretch of
   ``aging_interval_s`` a request spends without running adds one boost (optionally also a
   stretch of ``aging_factor`` x its current budget: a bound on slowdown; off by default
   because it also boosts every fresh short request that waits a few iterations, which
   voids the bound below across API priorities), and each boost lifts it one API-priority
   class (in level order: one level first, then classes). A demotion takes one boost back,
   so a boosted request keeps its lead for one budget of work. The bound: a request of API
   priority p that has waited k intervals has class p - k, on every model; after
   (p - q) intervals it ties with every request of API priority q that has not itself waited
   an interval nor been boosted by ``aging_factor`` (its model then gets every other
   iteration), after (p - q + 1) it is ahead of all of them: it takes the first seat, its
   model keeps every other iteration (the model class is lifted at most to a tie with the
   best API priority present: a lead would stall the other models' running requests while
   the aged one may only be waiting for pages), and no lower request of any
   model is admitted into the pages it waits for (the scheduler reserves them), so it starts
   as soon as pages are free (at once when they are, or when swap room lets it swap lower
   requests out; requests that reached the scheduler's ``preemption_limit`` are not swapped
   out for it), at the latest when the requests running at that moment finish. Against
   fresh work of its own API priority that is one interval. Requests that waited too (a
   backlog of the same age) are not overtaken by it, so under a backlog the bound grows by
   the time to serve the requests that outrank it and waited at least as long.
   Tail guard (bounded slowdown, our design; ``tail_guard_factor`` g): a request that was
   demoted (level >= 1) or preempted adds up the wall time of the iterations it is not part
   of; when that reaches g x its current budget it gets one lift (and the count restarts).
   A lift ranks the request like a boost for seats, batch order, KV pages and preemption
   victims, but in choosing the next model the request counts, from its first lift on, as
   level 0 of its class: its model takes turns with the models that have fresh work
   instead of going ahead of them (a lead would stall every fresh request of the other
   models, decodes included, for a whole budget of the lifted request's work: the overload
   loss of README "Overload") and keeps its turns after later demotions. A demotion takes a
   lift back before a boost. Its budget doubles per level, so in all it
   waits at most g x (sum of its budgets up to its last level) < 2g x that level's budget
   < 4g x its size (about 2g x typically) before its model gets at least every k-th
   iteration (k: the models with fresh work of its class) and it leads every fresh request
   for pages and seats: the slowdown stays within a constant, as FCFS's round robin gives
   it, where it would otherwise decode only when the other models have no fresh work (low
   load) or sit swapped out until an aging interval passes. Fresh (level-0, never
   preempted) requests are never lifted by it, so the bound above holds against them;
   requests lifted by the guard count as boosted there (they are a same-age backlog for
   it).
5. Preemption at iteration boundaries: the ``max_num_seqs`` most urgent requests get the
   seats (others keep their KV pages and wait); decode tokens go first, then prefill chunks
   in priority order; under memory pressure the lowest-priority running request of the
   device loses its pages (swapped to host memory or recomputed, per the scheduler's
   ``preemption_mode``); with swap, an urgent waiting request may also swap lower-priority
   running requests out to get in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from seallm.cost import BatchShape
from seallm.sched.policy import SchedulingPolicy
from seallm.sched.profile import ProfileSeed, ServiceProfile

if TYPE_CHECKING:
    from seallm.core import Request, StepPlan, StepResult


@dataclass(frozen=True)
class SeaLLMConfig:
    """Knobs of the doubling-budget policy.

    Attributes:
        output_quantile: the output-length statistic used in Ê (0.5 = median).
        service_aware: budgets from each service's profile (False: ``agnostic_budget_s`` for all).
        agnostic_budget_s: the initial budget of the service-agnostic ablation (s).
        doubling: double the budget at each demotion (False: fixed budget, plain MLFQ).
        preemption: let higher-priority work displace running requests (False: run-to-completion
            order once admitted, like FCFS).
        aging_interval_s: seconds of waiting that boost a request once (None: no aging by time;
            requests of the device's other models wait too, so the interval is in wall time).
        aging_factor: a wait of this many times the request's current budget also boosts it
            (None: off). Bounds slowdown, not only absolute waiting.
        max_model_skips: among models tied on the effective API class, a model with runnable
            work that others have passed over for this many iterations in a row goes first
            regardless of level (None: by level only).
        tail_guard_factor: a demoted or preempted request that has spent this many times its
            current budget (s) not running is lifted once (None: off): it outranks fresh
            requests for pages and seats and its model takes turns with theirs; fresh
            requests are never lifted. Bounds the slowdown of long requests (rule 4).
        use_request_priority: order first by the API's ``priority`` (lower first), then by DB.
        demotion_order: ``"budget"`` (a demoted request keeps competing by its remaining
            doubled budget) or ``"level"`` (strict MLFQ: any lower level runs first).
        accounting: how attained service grows: ``"work"`` (the request's own prefill
            tokens and decode iterations, priced by its service profile) or ``"iteration"``
            (the wall time of every iteration it took part in).
        refit_every_steps: refit each service's max-affine step-time model on its recent
            iterations every this many of its iterations (None: only when profiles are saved).
            The fit (~15 ms) is what ``profiles_path`` persists for ``seallm simulate``.
        seeds: per-model starting profiles.
    """

    output_quantile: float = 0.5
    service_aware: bool = True
    agnostic_budget_s: float = 1.0
    doubling: bool = True
    preemption: bool = True
    aging_interval_s: float | None = 30.0
    aging_factor: float | None = None
    max_model_skips: int | None = None
    tail_guard_factor: float | None = 1.0
    use_request_priority: bool = True
    accounting: str = "work"
    demotion_order: str = "budget"
    refit_every_steps: int | None = 2000
    seeds: dict[str, ProfileSeed] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0.0 <= self.output_quantile <= 1.0:
            raise ValueError(f"output_quantile must be in [0, 1], got {self.output_quantile}")
        if self.aging_interval_s is not None and self.aging_interval_s <= 0:
            raise ValueError("aging_interval_s must be positive or None")
        if self.aging_factor is not None and self.aging_factor <= 0:
            raise ValueError("aging_factor must be positive or None")
        if self.max_model_skips is not None and self.max_model_skips < 1:
            raise ValueError("max_model_skips must be >= 1 or None")
        if self.tail_guard_factor is not None and self.tail_guard_factor <= 0:
            raise ValueError("tail_guard_factor must be positive or None")
        if self.agnostic_budget_s <= 0:
            raise ValueError("agnostic_budget_s must be positive")
        if self.refit_every_steps is not None and self.refit_every_steps < 1:
            raise ValueError("refit_every_steps must be >= 1 or None")
        if self.demotion_order not in ("budget", "level"):
            raise ValueError(f"demotion_order must be 'budget' or 'level', got {self.demotion_order!r}")
        if self.accounting not in ("work", "iteration"):
            raise ValueError(f"accounting must be 'work' or 'iteration', got {self.accounting!r}")


@dataclass
class _DBState:
    budget_s: float
    level: int = 0
    boost: int = 0  # aging boosts (rule 4): each lifts the request one API-priority class
    lift: int = 0  # tail-guard lifts (rule 4): like a boost for keys; its model only ties
    attained_s: float = 0.0
    last_ran: float = 0.0
    waited_s: float = 0.0
    lifted: bool = False  # lifted by the tail guard at least once: level 0 for model turns
    request: "Request | None" = None


class SeaLLMPolicy(SchedulingPolicy):
    """The doubling-budget policy (``scheduling_policy: seallm``)."""

    name = "seallm"

    def __init__(self, config: SeaLLMConfig | None = None) -> None:
        self.config = config or SeaLLMConfig()
        self.preemptive = self.config.preemption
        self.profiles: dict[str, ServiceProfile] = {}
        self._state: dict[str, _DBState] = {}
        self._last_run: dict[str, int] = {}
        self._since_refit: dict[str, int] = {}
        if self.config.refit_every_steps is not None:
            import scipy.optimize  # noqa: F401  (imported now, not in the middle of serving)
        self._steps = 0
        self._prev_now: float | None = None
        self._model_delay: dict[str, float] = {}

    def profile(self, model: str) -> ServiceProfile:
        p = self.profiles.get(model)
        if p is None:
            p = self.profiles[model] = ServiceProfile(self.config.seeds.get(model))
        return p

    def save_profiles(self, path: str) -> None:
        """Write every service profile to ``path`` (JSON) so a restart does not start blind;
        each service's step-time model is refit on its recent iterations first (``seallm
        simulate`` reads it from this file)."""
        import json
        import os

        for p in self.profiles.values():
            p.refit()
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump({m: p.to_dict() for m, p in self.profiles.items()}, f)
        os.replace(tmp, path)

    def load_profiles(self, path: str) -> list[str]:
        """Load profiles saved by :meth:`save_profiles`; returns the models loaded.

        Raises:
            ValueError: the file is not a valid profile file.
        """
        import json

        try:
            with open(path) as f:
                data = json.load(f)
            loaded = {m: ServiceProfile.from_dict(d) for m, d in data.items()}
        except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as e:
            raise ValueError(f"{path}: not a seallm profile file ({e})") from None
        self.profiles.update(loaded)
        return list(loaded)

    def state(self, request_id: str) -> _DBState | None:
        return self._state.get(request_id)

    def on_arrival(self, request: "Request", now: float) -> None:
        c = self.config
        if request.request_id not in self._state:
            self.profile(request.model).observe_arrival(request.num_prompt_tokens, request.arrival_time)
        if c.service_aware:
            budget = self.profile(request.model).estimate(request.num_prompt_tokens, c.output_quantile)
        else:
            budget = c.agnostic_budget_s
        budget += self._model_delay.get(request.model, 0.0)  # held for a model load: Ê includes it
        self._state[request.request_id] = _DBState(max(budget, 1e-6), last_ran=request.arrival_time,
                                                   request=request)

    def on_model_delay(self, model: str, seconds: float) -> None:
        self._model_delay[model] = max(0.0, float(seconds))

    def _st(self, request: "Request", now: float) -> _DBState:
        st = self._state.get(request.request_id)
        if st is None:  # arrived before the policy was attached
            self.on_arrival(request, now)
            st = self._state[request.request_id]
        return st

    def _tiers(self, request: "Request", now: float) -> tuple[_DBState, int, int]:
        """(state, effective API class, effective level): each aging boost or tail-guard
        lift raises the request one API-priority class (in level order it first raises it
        one level, then classes)."""
        st = self._st(request, now)
        cls, level = self._raised(request, st.level, st.boost + st.lift)
        return st, cls, level

    def _raised(self, request: "Request", level: int, up: int) -> tuple[int, int]:
        """(API class, level) of a request at ``level`` raised ``up`` times (rule 4)."""
        user = request.priority if self.config.use_request_priority else 0
        if self.config.demotion_order == "budget":
            return user - up, level
        down = min(up, level)
        return user - (up - down), level - down

    def priority_key(self, request: "Request", now: float) -> tuple:
        st, cls, level = self._tiers(request, now)
        if self.config.demotion_order == "budget":
            return (cls, st.budget_s - st.attained_s, request.arrival_time, request.request_id)
        return (cls, level, st.budget_s - st.attained_s, request.arrival_time, request.request_id)

    def _class(self, request: "Request", now: float, floor: int) -> tuple:
        """The request's class for choosing the next model: (API priority - aging boosts,
        but not above ``floor``, the best API priority among the runnable requests; level),
        where a request the tail guard has lifted counts as level 0 from then on (rule 4)."""
        st = self._st(request, now)
        cls, level = self._raised(request, st.level, st.boost)
        return (max(cls, floor), 0 if st.lifted else level)

    def model_order(self, runnable: dict[str, list["Request"]], now: float) -> list[str]:
        """The model whose most urgent runnable request has the best class (API priority,
        aging boosts, level) runs next; models tied on that take turns (least recently run
        first), so fresh requests of every service progress while demoted ones yield across
        models; within an API class a model passed over for ``max_model_skips`` iterations
        goes first. Aging lifts a request's model at most to the best API priority present
        (a tie: turns), never ahead of it: a lead would stall every request of the other
        models, decodes included, although the aged request itself may only be waiting
        for pages (its boost already ranks it first for pages and seats)."""
        use = self.config.use_request_priority
        floor = min((r.priority if use else 0) for rs in runnable.values() for r in rs) if runnable else 0
        best = {m: min(self._class(r, now, floor) for r in rs) for m, rs in runnable.items()}
        skips = self.config.max_model_skips

        def rank(m: str) -> tuple:
            last = self._last_run.get(m, -1)
            overdue = skips is not None and self._steps - last >= skips
            return (best[m][0], not overdue, best[m], last)

        return sorted(runnable, key=rank)

    def on_step(self, plan: "StepPlan", result: "StepResult", now: float) -> None:
        self.on_steps((plan,), (result,), now)

    def on_steps(self, plans, results, now: float) -> None:
        """Charge each plan's requests for its iteration, then age (rule 4) only the
        requests that ran in none of them."""
        dt = 0.0 if self._prev_now is None else max(now - self._prev_now, 0.0)
        self._prev_now = now
        ran: set[str] = set()
        for plan, result in zip(plans, results):
            ran |= self._charge_step(plan, result, now)
        self._age(ran, now, dt)

    def _charge_step(self, plan: "StepPlan", result: "StepResult", now: float) -> set[str]:
        """One iteration's service: the model's profile, each request's attained service
        and level (rule 3); returns the ids of the requests that ran."""
        self._steps += 1
        self._last_run[plan.model] = self._steps
        prefill = sum(s.num_tokens for s in plan.seqs if not s.is_decode)
        decode = sum(1 for s in plan.seqs if s.is_decode)
        shape = BatchShape.of(plan)
        prof = self._observe(plan.model, result.step_time, prefill, decode, shape.num_tokens, shape.num_context_tokens)
        by_work = self.config.accounting == "work"
        ran = set()
        for s in plan.seqs:
            st = self._state.get(s.request_id)
            if st is None:
                continue
            ran.add(s.request_id)
            if not by_work:
                self._charge(st, result.step_time, now)
            elif s.is_decode:
                self._charge(st, prof.iteration_time_s, now)
            else:
                self._charge(st, s.num_tokens * prof.prefill_time_per_token_s, now)
        return ran

    def _age(self, ran: set[str], now: float, dt: float) -> None:
        """Rule 4 for the requests that did not run in an iteration ending at ``now`` (s),
        ``dt`` s after the previous one: aging boosts and the tail guard's wait."""
        if len(ran) == len(self._state):
            return  # every tracked request ran
        interval, factor = self.config.aging_interval_s, self.config.aging_factor
        if interval is not None or factor is not None:
            for rid, st in self._state.items():
                limit = min(interval if interval is not None else float("inf"),
                            factor * st.budget_s if factor is not None else float("inf"))
                if rid not in ran and now - st.last_ran >= limit:
                    st.boost += 1
                    st.last_ran = now
        guard = self.config.tail_guard_factor
        if guard is not None:
            for rid, st in self._state.items():
                if rid in ran:
                    continue
                r = st.request
                if st.level == 0 and not (r is not None and r.num_preemptions):
                    continue
                st.waited_s += dt
                if st.waited_s >= guard * st.budget_s:
                    st.lift += 1
                    st.lifted = True
                    st.waited_s = 0.0

    def _observe(self, model: str, step_time_s: float, prefill: int, decode: int, num_tokens: int,
                 context_tokens: int) -> ServiceProfile:
        """An iteration of ``model`` ran (``prefill`` + ``decode`` tokens, ``num_tokens`` in
        all, ``context_tokens`` KV tokens read): refresh its service profile (and refit its
        step-time model every ``refit_every_steps`` of its iterations); returns the profile."""
        prof = self.profile(model)
        prof.observe_step(step_time_s, prefill, decode)
        prof.observe_sample(num_tokens, context_tokens, step_time_s)
        every = self.config.refit_every_steps
        if every is not None and prof.num_samples >= 32:
            self._since_refit[model] = n = self._since_refit.get(model, 0) + 1
            if n >= every:
                self._since_refit[model] = 0
                prof.refit()
        return prof

    def _charge(self, st: _DBState, work_s: float, now: float) -> None:
        """A request ran: its attained service grows by ``work_s`` (s); each budget it fills
        demotes it one level (taking back one boost) and doubles its budget (rule 3)."""
        st.attained_s += work_s
        st.last_ran = now
        while st.attained_s >= st.budget_s:
            st.level += 1
            if self.config.demotion_order == "budget":
                if st.lift > 0:
                    st.lift -= 1
                elif st.boost > 0:
                    st.boost -= 1
            st.attained_s -= st.budget_s
            if self.config.doubling:
                st.budget_s *= 2

    def steady_decode_until(self, batches, now: float) -> float | None:
        """Always, provided the policy tracks every one of these requests (model turns,
        budgets, aging and the tail guard change only by :meth:`on_decode_run`)."""
        if any(r.request_id not in self._state for rs in batches.values() for r in rs):
            return None
        return math.inf

    def on_decode_run(self, model, requests, step_times, end_times, contexts) -> None:
        states = [self._state[r.request_id] for r in requests]
        ran = {r.request_id for r in requests}
        others = len(ran) < len(self._state)  # requests that wait while these run (rule 4)
        by_work = self.config.accounting == "work"
        b = len(requests)
        for t, now, ctx in zip(step_times, end_times, contexts):
            self._steps += 1
            prof = self._observe(model, t, 0, b, b, ctx)
            work = prof.iteration_time_s if by_work else t
            for st in states:
                self._charge(st, work, now)
            if others:
                self._age(ran, now, 0.0 if self._prev_now is None else max(now - self._prev_now, 0.0))
            self._prev_now = now
        self._last_run[model] = self._steps

    def on_overhead(self, model: str, iteration_s: float | None = None, ingest_s: float | None = None) -> None:
        self.profile(model).observe_overhead(iteration_s, ingest_s)

    def on_finish(self, request: "Request", now: float) -> None:
        self._state.pop(request.request_id, None)
        if request.num_output_tokens and str(request.finish_reason) != "abort":
            self.profile(request.model).observe_output_length(request.num_output_tokens)
