"""SLOs-Serve's scheduling policy (``slos-serve``) and the Sarathi-Serve baseline (``sarathi``).

Reference: SLOs-Serve (arXiv 2504.08784), ``shared/reference/slo-scheduling.md`` §1.7-1.10
(realization, soft admission, dynamic batch size, re-planning) and §3 (Sarathi-Serve).

``slos-serve``:

* Every request carries per-stage SLOs (:class:`~seallm.core.SLO`; requests without one get
  ``default_slo_class``). A TTFT slowdown is resolved once, at arrival, against the
  predicted zero-load prefill time (:func:`~seallm.sched.slo.zero_load_prefill_s`).
* A planning event (:func:`~seallm.sched.slo_planner.plan_admission`) runs when requests
  wait for a decision and more than ``replan_arrivals`` arrived, more than
  ``replan_finishes`` finished, ``replan_interval_s`` passed since the last one, or the
  model has no guaranteed work. Admitted requests become ``"guaranteed"``; the others
  ``"best_effort"`` (or, with ``admission: reject`` or a request's ``admission_mode``,
  are refused with HTTP 429 so that a router may try another replica).
* Each iteration is realized from the current state (our form of §1.7's batch list plus
  cyclic decode plan, recomputed per iteration so that it follows real step times): the
  batch period is the tightest TPOT among the guaranteed decoding requests, and the batch
  holds ``T^-1(period)`` tokens (dynamic batch size, §1.9); guaranteed decodes whose next
  token is due within ``decode_margin`` periods take one token each (the others are ahead
  of their cumulative schedule and wait, so looser tiers decode once per their own TPOT);
  guaranteed prefills take chunks in EDF order, then the decodes that were ahead take one
  token each; what is left goes to best-effort and undecided requests in arrival order.
* Preemption: best-effort requests have the largest priority keys, latest arrival largest,
  so they lose their pages first, last in first out (§1.8); a guaranteed request that
  cannot get pages preempts them (recompute).

``sarathi``: chunked prefill under a per-iteration token budget sized to the tightest TPOT
among decoding requests (the largest batch predicted to fit it), decodes first, the budget
split evenly across prefilling requests in arrival order; no admission control.

Both need each model's step-time model: ``cost_models`` (max-affine pieces per model, e.g.
SLOs-Serve's published parameters, §1.3), else an online fit of the iterations the model
runs (:class:`~seallm.sched.profile.ServiceProfile`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from seallm.core import SLO
from seallm.cost import BatchShape, MaxAffineCostModel
from seallm.sched.policy import BatchAllocation, BatchLimits, SchedulingPolicy
from seallm.sched.profile import ServiceProfile
from seallm.sched.slo import SLO_CLASSES, token_offset_s, tpot_at, ttft_target_s, zero_load_prefill_s
from seallm.sched.slo_planner import PlanRequest, WindowModel, plan_admission

if TYPE_CHECKING:
    from seallm.core import Request, StepPlan, StepResult

GUARANTEED = "guaranteed"
BEST_EFFORT = "best_effort"
ADMISSION_MODES = ("best_effort", "reject")


@dataclass(frozen=True)
class SLOsServeConfig:
    """Knobs of ``slos-serve`` (and of ``sarathi``, which reads the SLO and cost fields).

    Attributes:
        default_slo_class: SLO class (a name in :data:`~seallm.sched.slo.SLO_CLASSES`) of
            requests that carry no TTFT/TPOT target.
        admission: what happens to a request the planner cannot guarantee: ``"best_effort"``
            (served from leftover budget, preempted first) or ``"reject"`` (HTTP 429 with
            ``Retry-After``).
        replan_arrivals, replan_finishes, replan_interval_s: planning triggers (the
            reference's 10 arrivals, 6 finishes, 0.1 s).
        max_new_per_plan: most undecided requests one planning call considers (earliest
            deadlines first; the rest wait for the next call). Bounds the planning time.
        decode_margin: a guaranteed decode joins a batch when its next token is due within
            this many batch periods.
        cost_models: model -> max-affine step-time pieces ``(per_token_s,
            per_context_token_s, base_s)``; models not listed are fitted online.

    Raises:
        ValueError: an unknown SLO class or admission mode, or a non-positive knob.
    """

    default_slo_class: str = "chatbot"
    admission: str = "best_effort"
    replan_arrivals: int = 10
    replan_finishes: int = 6
    replan_interval_s: float = 0.1
    max_new_per_plan: int = 32
    decode_margin: float = 2.0
    cost_models: Mapping[str, tuple[tuple[float, float, float], ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.default_slo_class not in SLO_CLASSES:
            raise ValueError(f"unknown default_slo_class {self.default_slo_class!r}; known: {sorted(SLO_CLASSES)}")
        if self.admission not in ADMISSION_MODES:
            raise ValueError(f"admission must be one of {list(ADMISSION_MODES)}, got {self.admission!r}")
        for k in ("replan_arrivals", "replan_finishes", "max_new_per_plan"):
            if getattr(self, k) < 1:
                raise ValueError(f"{k} must be >= 1, got {getattr(self, k)}")
        if not self.replan_interval_s > 0 or not self.decode_margin > 0:
            raise ValueError("replan_interval_s and decode_margin must be > 0")

    @classmethod
    def from_options(cls, options: Mapping) -> "SLOsServeConfig":
        """From a deployment file's ``policy_options`` (lists become tuples).

        Raises:
            TypeError: an unknown option. ValueError: an invalid value.
        """
        opts = dict(options)
        if "cost_models" in opts:
            try:
                opts["cost_models"] = {m: tuple(tuple(float(x) for x in piece) for piece in pieces)
                                       for m, pieces in dict(opts["cost_models"]).items()}
            except (TypeError, ValueError):
                raise ValueError("cost_models must map model names to lists of "
                                 "[per_token_s, per_context_token_s, base_s]") from None
            for m, pieces in opts["cost_models"].items():
                if not pieces or any(len(p) != 3 for p in pieces):
                    raise ValueError(f"cost_models[{m!r}] must be a non-empty list of 3-number pieces")
        return cls(**opts)


@dataclass
class _State:
    request: "Request"
    slo: SLO
    ttft_s: float  # resolved TTFT target
    deadline_s: float  # arrival + TTFT
    admission: str | None = None


class _SLOPolicy(SchedulingPolicy):
    """What ``slos-serve`` and ``sarathi`` share: SLO resolution and step-time models."""

    def __init__(self, config: SLOsServeConfig | None = None) -> None:
        self.config = config or SLOsServeConfig()
        self._state: dict[str, _State] = {}
        self._models = {m: MaxAffineCostModel(p) for m, p in self.config.cost_models.items()}
        self.profiles: dict[str, ServiceProfile] = {}

    def cost_model(self, model: str) -> MaxAffineCostModel:
        """The step-time model of ``model``: configured, else fitted online (before the
        first fit: the profile's per-token prefill cost and iteration time)."""
        cm = self._models.get(model)
        if cm is not None:
            return cm
        prof = self.profiles.setdefault(model, ServiceProfile())
        if prof.cost_model is not None:
            return prof.cost_model
        return MaxAffineCostModel(((prof.prefill_time_per_token_s, 0.0, prof.iteration_time_s),))

    def slo_of(self, request: "Request") -> SLO:
        s = request.slo
        return s if s is not None and s.has_stage_targets else SLO_CLASSES[self.config.default_slo_class]

    def ttft_target(self, request: "Request") -> float | None:
        """The request's resolved TTFT target (s), as planned for (None: unknown request)."""
        st = self._state.get(request.request_id)
        return None if st is None else st.ttft_s

    def on_arrival(self, request: "Request", now: float) -> None:
        slo = self.slo_of(request)
        zero = zero_load_prefill_s(self.cost_model(request.model), request.num_prompt_tokens)
        ttft = ttft_target_s(slo, zero)
        if ttft is None:  # a TPOT-only SLO: the default class's TTFT
            ttft = ttft_target_s(SLO_CLASSES[self.config.default_slo_class], zero)
        self._state[request.request_id] = _State(request, slo, ttft, request.arrival_time + ttft)

    def _st(self, request: "Request") -> _State:
        st = self._state.get(request.request_id)
        if st is None:
            self.on_arrival(request, request.arrival_time)
            st = self._state[request.request_id]
        return st

    def _tpot_now(self, st: _State) -> float:
        """The TPOT of the request's current stage (its next token), s."""
        t = tpot_at(st.slo, st.request.num_output_tokens + 1)
        return t if t is not None else SLO_CLASSES[self.config.default_slo_class].tpot

    def _next_deadline(self, st: _State) -> float:
        """When the request's next token is due (cumulative rule, anchored at the later of
        its TTFT deadline and its first token)."""
        r = st.request
        if r.first_token_time is None:
            return st.deadline_s
        t0 = max(st.deadline_s, r.first_token_time)
        return t0 + token_offset_s(st.slo, r.num_output_tokens + 1)

    def on_step(self, plan: "StepPlan", result: "StepResult", now: float) -> None:
        if plan.model not in self._models:
            prof = self.profiles.setdefault(plan.model, ServiceProfile())
            prefill = sum(s.num_tokens for s in plan.seqs if not s.is_decode)
            prof.observe_step(result.step_time, prefill, len(plan.seqs) - sum(1 for s in plan.seqs if not s.is_decode))
            prof.observe_batch(BatchShape.of(plan), result.step_time)
            if prof.num_samples >= 64 and prof.num_samples % 256 == 0:
                prof.refit()

    def on_finish(self, request: "Request", now: float) -> None:
        self._state.pop(request.request_id, None)

    def model_order(self, runnable: dict[str, list["Request"]], now: float) -> list[str]:
        """The model with the most urgent request first (EDF across models)."""
        return sorted(runnable, key=lambda m: min(self.priority_key(r, now) for r in runnable[m]))

    @staticmethod
    def _is_decoding(r: "Request") -> bool:
        return bool(r.output_token_ids) and r.num_uncomputed_tokens == 1


class SLOsServePolicy(_SLOPolicy):
    """SLOs-Serve: DP admission planning, soft admission, SLO-driven batches (see the module
    docstring)."""

    name = "slos-serve"

    def __init__(self, config: SLOsServeConfig | None = None) -> None:
        super().__init__(config)
        self._refused: list[tuple["Request", str]] = []
        self._last_plan: dict[str, float] = {}
        self._arrived: dict[str, int] = {}
        self._finished: dict[str, int] = {}
        self.num_plans = 0
        self.plan_seconds = 0.0  # wall time spent planning (s), for the overhead report

    # ---- keys ------------------------------------------------------------------------------
    def priority_key(self, request: "Request", now: float) -> tuple:
        st = self._st(request)
        if st.admission == GUARANTEED:
            return (0, st.deadline_s, request.arrival_time, request.request_id)
        return (1 if st.admission is None else 2, request.arrival_time, request.request_id)

    def evicts_for(self, request: "Request") -> bool:
        st = self._state.get(request.request_id)
        return st is not None and st.admission == GUARANTEED

    def defers_admission(self, request: "Request") -> bool:
        return self._mode(request) == "reject"

    def take_refused(self) -> list[tuple["Request", str]]:
        out, self._refused = self._refused, []
        return out

    def on_arrival(self, request: "Request", now: float) -> None:
        super().on_arrival(request, now)
        self._arrived[request.model] = self._arrived.get(request.model, 0) + 1

    def on_finish(self, request: "Request", now: float) -> None:
        st = self._state.get(request.request_id)
        if st is not None and st.admission == GUARANTEED:
            self._finished[request.model] = self._finished.get(request.model, 0) + 1
        super().on_finish(request, now)

    def _mode(self, r: "Request") -> str:
        return r.admission_mode or self.config.admission

    # ---- planning ----------------------------------------------------------------------------
    def _window(self, model: str, tpots: list[float], limits: BatchLimits, context: int) -> WindowModel:
        return WindowModel(self.cost_model(model), tuple(tpots), limits.token_budget, context)

    def _should_plan(self, model: str, states: list[_State], now: float) -> bool:
        if not any(st.admission is None for st in states):
            return False
        c = self.config
        return (self._arrived.get(model, 0) > c.replan_arrivals or self._finished.get(model, 0) > c.replan_finishes
                or now - self._last_plan.get(model, -math.inf) >= c.replan_interval_s
                or not any(st.admission == GUARANTEED for st in states))

    def plan(self, model: str, now: float, limits: BatchLimits) -> None:
        """One planning event for ``model``: decide its undecided requests."""
        import time

        t_start = time.perf_counter()
        states = [st for st in self._state.values() if st.request.model == model and not st.request.is_finished]
        live = [st for st in states if st.admission != BEST_EFFORT]
        tpots = sorted({self._tpot_now(st) for st in live})
        context = sum(st.request.num_computed_tokens for st in live if st.admission == GUARANTEED)
        window = self._window(model, tpots, limits, context)
        tier = {t: i for i, t in enumerate(tpots)}
        spare = limits.free_pages + sum(limits.pages_of(st.request.request_id) for st in states
                                        if st.admission == BEST_EFFORT)
        reqs = []
        for st in live:
            r = st.request
            full = min(r.num_prompt_tokens + r.params.max_tokens, r.max_model_len)
            need = max(0, limits.pages_for(model, full) - limits.pages_of(r.request_id))
            if self._is_decoding(r):
                deadline, prefill = now, 0
            else:
                deadline = self._next_deadline(st)
                prefill = r.num_uncomputed_tokens - (1 if r.output_token_ids else 0)
            reqs.append(PlanRequest(r.request_id, st.admission == GUARANTEED, deadline, max(prefill, 0),
                                    tier[self._tpot_now(st)], need))
        result = plan_admission(reqs, window, spare, now, max_new=self.config.max_new_per_plan)
        for st in live:
            if st.admission is not None or st.request.request_id in result.deferred:
                continue
            r = st.request
            if r.request_id in result.admitted:
                st.admission = r.admission = GUARANTEED
            elif self._mode(r) == "reject":
                self._refused.append((r, "the SLO planner cannot guarantee this request's latency targets "
                                         f"(model {model!r} is at capacity); retry later"))
                st.admission = BEST_EFFORT  # until the scheduler finishes it (no verdict: refused)
            else:
                st.admission = r.admission = BEST_EFFORT
        self._last_plan[model] = now
        self._arrived[model] = 0
        self._finished[model] = 0
        self.num_plans += 1
        self.plan_seconds += time.perf_counter() - t_start

    # ---- one iteration -------------------------------------------------------------------------
    def allocate(self, model: str, candidates: list["Request"], now: float,
                 limits: BatchLimits) -> BatchAllocation:
        states = [st for st in self._state.values() if st.request.model == model and not st.request.is_finished]
        if self._should_plan(model, states, now):
            self.plan(model, now, limits)
        refused = {r.request_id for r, _ in self._refused}
        guaranteed, others = [], []
        for r in candidates:
            if r.request_id in refused:
                continue
            st = self._st(r)
            if st.admission == GUARANTEED:
                guaranteed.append(st)
            elif st.admission == BEST_EFFORT or self._mode(r) != "reject":
                others.append(r)
        window_cm = self.cost_model(model)
        cap = limits.token_budget
        decoding = [st for st in guaranteed if self._is_decoding(st.request)]
        prefilling = sorted((st for st in guaranteed if not self._is_decoding(st.request)),
                            key=lambda st: self._next_deadline(st))
        context = sum(st.request.num_computed_tokens for st in decoding)
        batch = cap
        margin = self.config.decode_margin
        due, ahead = [], []
        decoding.sort(key=self._next_deadline)
        for st in decoding:
            (due if self._next_deadline(st) - now <= margin * self._tpot_now(st) else ahead).append(st)
        if guaranteed:
            # EDF over deadlines (the reference's AR planner, with TTFT deadlines too): the
            # batch must end by the next-token deadline of every decode in it and by every
            # guaranteed prefill deadline, and leave a decode it skips one TPOT after it to
            # be served in time. Deadlines too close to meet (the batch cannot be shorter
            # than its decodes plus one token) are ignored; none left: one TPOT.
            tpot = min(self._tpot_now(st) for st in guaranteed)
            w = WindowModel(window_cm, (tpot,), cap, context)
            shortest = w.step_time(len(due) + 1)
            ends = [self._next_deadline(st) - now for st in due + prefilling]
            ends += [self._next_deadline(st) - self._tpot_now(st) - now for st in ahead]
            ends = [e for e in ends if e >= shortest]
            batch = w.batch_tokens(min(ends) if ends else tpot)
        budget = max(batch, len(due))
        left = budget - len(due)
        order: list["Request"] = [st.request for st in due]
        caps: dict[str, int] = {st.request.request_id: 1 for st in due}
        for st in prefilling:
            r = st.request
            if left <= 0:
                break
            n = min(r.num_uncomputed_tokens, left)
            order.append(r)
            caps[r.request_id] = n
            left -= n
        for st in ahead:
            if left <= 0:
                break
            order.append(st.request)
            caps[st.request.request_id] = 1
            left -= 1
        for r in sorted(others, key=lambda r: (r.arrival_time, r.request_id)):
            if left <= 0:
                break
            n = min(r.num_uncomputed_tokens, left)
            order.append(r)
            caps[r.request_id] = n
            left -= n
        return BatchAllocation(tuple(order), budget, caps)


class SarathiPolicy(_SLOPolicy):
    """Sarathi-Serve as SLOs-Serve's baseline: a token budget sized to the tightest TPOT
    among decoding requests, decodes first, prefills in arrival order sharing the rest of the
    budget evenly; no admission control (every request is served, none is refused)."""

    name = "sarathi"

    def priority_key(self, request: "Request", now: float) -> tuple:
        return (request.arrival_time, request.request_id)

    def allocate(self, model: str, candidates: list["Request"], now: float,
                 limits: BatchLimits) -> BatchAllocation:
        order = sorted(candidates, key=lambda r: (r.arrival_time, r.request_id))
        decoding = [r for r in order if self._is_decoding(r)]
        prefilling = [r for r in order if not self._is_decoding(r)]
        budget = limits.token_budget
        if decoding:
            u = min(self._tpot_now(self._st(r)) for r in decoding)
            context = sum(r.num_computed_tokens for r in decoding)
            budget = max(len(decoding) + 1, WindowModel(self.cost_model(model), (u,), limits.token_budget,
                                                        context).batch_tokens(u))
        caps: dict[str, int] = {r.request_id: 1 for r in decoding}
        left = budget - len(decoding)
        if prefilling and left > 0:
            share = max(1, math.ceil(left / len(prefilling)))
            for r in prefilling:
                caps[r.request_id] = min(share, r.num_uncomputed_tokens)
        return BatchAllocation(tuple(decoding + prefilling), budget, caps)
