"""SLOs-Serve's multi-SLO admission planner: a dynamic program over EDF-ordered requests.

Reference: SLOs-Serve (arXiv 2504.08784), ``shared/reference/slo-scheduling.md`` §1.4-1.6 and
§1.12 (re-implemented from that description; the authors' code has no license). At a planning
event the planner decides which newly arrived requests can be *guaranteed* (every prefill
done by its TTFT deadline, every decoding request kept at its TPOT, the KV memory enough)
while every request admitted earlier stays guaranteed, maximising the number admitted.

The dynamic program (§1.4):

* Requests are sorted by prefill deadline ``d_r`` (EDF; a decoding request's is ``now``).
* A state is keyed by the position in that order and ``c``, the count of selected new
  requests per TPOT tier; the decode load of every later window depends only on how many
  selected requests are in each tier, not on which. Each state holds points ``(U, B)``:
  KV pages taken, and the cumulative prefill-token surplus (capacity of the windows so far
  minus the prefill tokens of the selected requests; ``B < 0`` means some selected prefill
  misses its deadline, the EDF feasibility test).
* Old (admitted) requests are selected in every state; a new one is selected or skipped.
* The window ``(d_prev, d_n]`` gives ``P(t, counts)`` prefill tokens (the ``PLAN`` routine,
  :meth:`WindowModel.prefill_rate`), where the decoding set is the selected requests before
  ``n``.
* Objective: the most new requests (every request has profit 1, §1.2).

Our choices where the reference leaves room or has quirks (§1.13), stated:

1. States are indexed by position rather than by "last selected request": a skipped request
   changes neither the decode set nor the surplus, so both give the same optimum, and this
   needs one transition per state instead of one per predecessor.
2. ``PLAN`` is used in its fluid form: in a window of ``t`` s whose tightest decoding tier has
   TPOT ``u``, batches of ``T^-1(u)`` tokens run every ``u`` s, a tier-``k`` request takes
   ``u / TPOT_k`` tokens per batch, and the rest is prefill: ``P = t / u x (T^-1(u) -
   sum_k n_k u / TPOT_k)``. Windows then add up exactly (the reference's ``floor(t/u)``
   would lose part of every short window between consecutive deadlines). Without decoding
   requests the window runs full batches of the token cap.
3. Pareto pruning keeps the two extreme points of each state's front, (max surplus) and
   (min pages): exact whenever only one of the two resources binds; the surplus is compared
   the right way round (larger is better), unlike the v1 code.
4. A request's tier is its own TPOT target (the reference maps by current slack), so a
   guarantee holds for the request's whole decode, not only the planning horizon.
5. Requests with the same TTFT deadline keep arrival order, and between equally good sets
   the one of earlier requests wins (first come, first guaranteed).

Costs: ``O(N x prod_k (n_k + 1))`` cell updates for ``N`` requests and ``n_k`` new ones in
tier ``k``, vectorised with NumPy (one set of array operations per request).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from seallm.cost import MaxAffineCostModel

_NEG = -np.inf


@dataclass(frozen=True)
class PlanRequest:
    """One request as the planner sees it.

    Attributes:
        request_id: the request. old: admitted before (must stay guaranteed).
        deadline_s: its prefill (TTFT) deadline, s on the scheduler's clock; ``now`` once it
            is decoding.
        prefill_tokens: prompt tokens still to prefill (0 once decoding).
        tier: index of its TPOT in :attr:`WindowModel.tier_tpots`.
        pages: KV pages it still has to take for its whole context (prompt plus
            ``max_tokens``).
    """

    request_id: str
    old: bool
    deadline_s: float
    prefill_tokens: int
    tier: int
    pages: int


@dataclass(frozen=True)
class WindowModel:
    """Batch timing for planning windows: the step-time model ``T(N)`` at the current context,
    the TPOT tiers, and the per-iteration token cap.

    Attributes:
        cost_model: SLOs-Serve's max-affine step time (:class:`MaxAffineCostModel`).
        tier_tpots: distinct TPOT targets, ascending (s).
        max_batch_tokens: most tokens in one iteration.
        context_tokens: KV tokens read per iteration, taken as fixed over the plan.

    Raises:
        ValueError: no tiers, unsorted or non-positive tiers, or a cap below 1.
    """

    cost_model: MaxAffineCostModel
    tier_tpots: tuple[float, ...]
    max_batch_tokens: int
    context_tokens: int = 0

    def __post_init__(self) -> None:
        t = self.tier_tpots
        if not t or any(x <= 0 for x in t) or list(t) != sorted(set(t)):
            raise ValueError(f"tier_tpots must be distinct positive seconds, ascending; got {t}")
        if self.max_batch_tokens < 1:
            raise ValueError(f"max_batch_tokens must be >= 1, got {self.max_batch_tokens}")

    def step_time(self, tokens: int) -> float:
        """Predicted seconds of an iteration of ``tokens`` tokens."""
        return max(a * tokens + c * self.context_tokens + b for a, c, b in self.cost_model.pieces)

    def batch_tokens(self, seconds: float) -> int:
        """Largest batch (tokens, capped) whose iteration fits in ``seconds`` (``T^-1``)."""
        return min(self.max_batch_tokens, self.cost_model.max_tokens_within(seconds, self.context_tokens))

    def startup_tokens(self, tier: int | None = None) -> float:
        """The most the fluid window model can promise beyond what whole batches deliver by
        a deadline, in tokens, so the planner starts that far in deficit (conservative):
        with decoding requests whose tightest tier is ``tier``, one batch of that tier's
        period; without (None), what the fixed cost of one iteration ``T(0)`` is worth at
        the full-batch rate (``~ b / k1`` for one affine piece)."""
        # the fixed cost of one iteration, T(0), in tokens at the full-batch rate
        fixed = self.step_time(0) * self.max_batch_tokens / self.step_time(self.max_batch_tokens)
        return fixed if tier is None else min(fixed, float(self.period(tier)[1]))

    def period(self, tier: int) -> tuple[float, int]:
        """(batch period in s, tokens per batch) when tier ``tier`` is the tightest decoding:
        batches of ``T^-1(TPOT)`` tokens every TPOT, or full capped batches when those
        are faster."""
        u = self.tier_tpots[tier]
        t_cap = self.step_time(self.max_batch_tokens)
        if t_cap < u:
            return t_cap, self.max_batch_tokens
        return u, self.batch_tokens(u)

    def prefill_rate(self, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Prefill tokens per second left by a decoding set, and whether the set is feasible.

        Args:
            counts: decoding requests per tier, shape ``[K, *cells]`` (any trailing shape).

        Returns:
            ``(rate, feasible)`` of shape ``[*cells]``: tokens/s for prefill chunks (0 where
            infeasible), and whether every tier keeps its TPOT (the decode tokens fit the
            batches).
        """
        inv_tp, u_k, bs_k, full = self._tables
        present = counts > 0
        has = present.any(axis=0)
        kstar = present.argmax(axis=0)
        u = u_k[kstar]
        load = np.tensordot(inv_tp, counts, axes=1)  # decode tokens per second
        slack = bs_k[kstar] - u * load
        rate = np.where(has, np.maximum(slack, 0.0) / u, full)
        return rate, ~has | (slack >= -1e-9)

    @cached_property
    def _tables(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """(1 / TPOT per tier, period per tier, batch tokens per tier, full-batch tokens/s)."""
        periods = [self.period(k) for k in range(len(self.tier_tpots))]
        return (1.0 / np.asarray(self.tier_tpots), np.asarray([p[0] for p in periods]),
                np.asarray([float(p[1]) for p in periods]),
                self.max_batch_tokens / self.step_time(self.max_batch_tokens))


@dataclass(frozen=True)
class _OldGroup:
    """Consecutive old requests with one deadline, applied as one step (no window between
    them, so checking the surplus after the group is the same as after each)."""

    old: bool
    deadline_s: float
    prefill_tokens: int
    pages: int
    tiers: tuple[tuple[int, int], ...]


def _group_old(order: Sequence[PlanRequest], now: float) -> list[tuple[int, "PlanRequest | _OldGroup"]]:
    out: list = []
    i = 0
    while i < len(order):
        r = order[i]
        if not r.old:
            out.append((i, r))
            i += 1
            continue
        d = max(r.deadline_s, now)
        j, counts, p, m = i, {}, 0, 0
        while j < len(order) and order[j].old and max(order[j].deadline_s, now) == d:
            counts[order[j].tier] = counts.get(order[j].tier, 0) + 1
            p += order[j].prefill_tokens
            m += order[j].pages
            j += 1
        out.append((i, _OldGroup(True, d, p, m, tuple(sorted(counts.items())))))
        i = j
    return out


def _repair(b0: np.ndarray, u0: np.ndarray, b1: np.ndarray, u1: np.ndarray) -> np.ndarray | None:
    """Where the max-surplus point became invalid (memory) but the min-pages point did not,
    the latter is also the former (in place); returns where (None: nowhere)."""
    lost = ~np.isfinite(b0) & np.isfinite(b1)
    if not lost.any():
        return None
    b0[lost], u0[lost] = b1[lost], u1[lost]
    return lost


@dataclass(frozen=True)
class AdmissionPlan:
    """The planner's answer.

    Attributes:
        feasible: the old requests alone keep every target (False: some old request will be
            late whatever is admitted; new ones are then admitted only where they do not add
            to that lateness).
        admitted: ids of the new requests admitted.
        surplus_tokens: prefill-token surplus of the chosen state at the last deadline.
        deferred: new requests beyond ``max_new``, not considered (decide them next time).
    """

    feasible: bool
    admitted: frozenset[str]
    surplus_tokens: float = 0.0
    deferred: frozenset[str] = frozenset()


def plan_admission(requests: Sequence[PlanRequest], window: WindowModel, free_pages: int,
                   now: float, old_decoding: Sequence[int] | None = None,
                   max_new: int | None = None) -> AdmissionPlan:
    """Run the multi-SLO dynamic program (module docstring) at time ``now`` (s).

    Args:
        requests: old and new requests (any order).
        window: the batch-timing model and TPOT tiers.
        free_pages: KV pages the selected requests may take (free pages plus those held by
            best-effort requests, which are preempted for them).
        now: the planning time, s.
        old_decoding: decoding requests per tier not in ``requests`` (their decode load
            counts in every window; None: none).
        max_new: consider only this many new requests, earliest deadlines first (the others
            are left undecided, in ``deferred``; bounds the planning time, which grows with
            the product of new requests per tier). None: all.

    Returns:
        The admitted set (see :class:`AdmissionPlan`).

    Raises:
        ValueError: a request's tier outside the window model's tiers.
    """
    K = len(window.tier_tpots)
    for r in requests:
        if not 0 <= r.tier < K:
            raise ValueError(f"request {r.request_id}: tier {r.tier} outside 0..{K - 1}")
    order = sorted(requests, key=lambda r: (max(r.deadline_s, now), not r.old))
    deferred: frozenset[str] = frozenset()
    if max_new is not None:
        new_ids = [r.request_id for r in order if not r.old]
        if len(new_ids) > max_new:
            deferred = frozenset(new_ids[max_new:])
            order = [r for r in order if r.request_id not in deferred]
    n_new = [0] * K
    for r in order:
        if not r.old:
            n_new[r.tier] += 1
    dims = tuple(n + 1 for n in n_new)
    grid = np.indices(dims, dtype=np.float64)  # [K, *dims]: selected new per tier
    base = np.zeros((K,) + (1,) * K)
    if old_decoding is not None:
        base[:, ...] = np.asarray(old_decoding, dtype=np.float64).reshape((K,) + (1,) * K)
    rate, feasible = window.prefill_rate(base + grid)
    # Two points per cell: 0 = max surplus, 1 = min pages (so B0 >= B1 and U0 >= U1).
    # Invalid: B = -inf, U = +inf.
    B0, B1 = np.full(dims, _NEG), np.full(dims, _NEG)
    U0, U1 = np.full(dims, np.inf), np.full(dims, np.inf)
    origin = (0,) * K
    decoding = [r.tier for r in order if r.old and r.prefill_tokens == 0 and r.deadline_s <= now]
    B0[origin] = B1[origin] = -window.startup_tokens(min(decoding) if decoding else None)
    U0[origin] = U1[origin] = 0.0
    # Lineage for the backtrack, one entry per request: for an old one, (-1, -1, region,
    # where point 0 was replaced by point 1); for a new one, (its index in ``order``, tier,
    # the region its choice covers, where point 0 / point 1 came from including it (from the
    # cell one lower in its tier), where an included point 0 came from that cell's point 1).
    back: list[tuple] = []
    seen = [0] * K  # new requests of each tier so far: cells beyond are unreachable
    at_origin = np.zeros(dims, dtype=bool)
    at_origin[origin] = True
    on_time = True  # the old requests alone keep every target
    t_prev = now
    steps = _group_old(order, now)
    for idx, r in steps:
        reach = tuple(slice(0, s + 1) for s in seen)
        d = max(r.deadline_s, now)
        if d > t_prev:
            gain = (d - t_prev) * rate[reach]
            B0[reach] += gain
            B1[reach] += gain
            t_prev = d
        if r.old:
            p, m = r.prefill_tokens, r.pages
            for tier, n in r.tiers:
                base[tier] += n
            rate, feasible = window.prefill_rate(base + grid)
            b0, b1, u0, u1 = B0[reach], B1[reach], U0[reach], U1[reach]
            b0 -= p
            b1 -= p
            u0 += m
            u1 += m
            # New requests may not make an old one late: a cell is dropped where the old
            # request misses (surplus, pages, decode pace) but would not without the new ones
            # (the origin cell, where none is selected; it is never dropped, so a deficit the
            # old requests cause alone is carried and blocks new ones until it is recovered).
            b_thr, u_thr = min(0.0, B0[origin]), max(float(free_pages), U0[origin])
            if B0[origin] < -1e-6 and p or U0[origin] > free_pages or not feasible[origin]:
                on_time = False
            ok = feasible[reach] | at_origin[reach]
            for b, u in ((b0, u0), (b1, u1)):
                bad = ~ok | (u > u_thr)
                if p:
                    bad |= b < b_thr - 1e-6
                b[bad], u[bad] = _NEG, np.inf
            back.append((-1, -1, reach, _repair(b0, u0, b1, u1)))
            continue
        p, m = r.prefill_tokens, r.pages
        k = r.tier
        seen[k] += 1
        dst = list(reach)
        src = list(reach)
        dst[k], src[k] = slice(1, seen[k] + 1), slice(0, seen[k])
        dst, src = tuple(dst), tuple(src)
        ok = feasible[dst]
        inc = []
        for Bp, Up in ((B0, U0), (B1, U1)):
            ib, iu = Bp[src] - p, Up[src] + m
            bad = ~ok | (iu > free_pages)
            if p:
                bad |= ib < -1e-6
            ib[bad], iu[bad] = _NEG, np.inf
            inc.append((ib, iu))
        (ib0, iu0), (ib1, iu1) = inc
        from1 = _repair(ib0, iu0, ib1, iu1)
        b0, u0, b1, u1 = B0[dst], U0[dst], B1[dst], U1[dst]
        take0 = ib0 > b0 + 0.5  # near-ties (under one token) keep the earlier requests
        take1 = iu1 < u1
        B0[dst] = np.where(take0, ib0, b0)
        U0[dst] = np.where(take0, iu0, u0)
        B1[dst] = np.where(take1, ib1, b1)
        U1[dst] = np.where(take1, iu1, u1)
        back.append((idx, k, dst, take0, take1, from1))
    B = np.stack((B0, B1))
    valid = np.isfinite(B)
    count = grid.sum(axis=0)
    score = np.where(valid, count[None] + 0.0, -1.0)
    best = score.max()
    surplus = np.where(score == best, B, _NEG)
    flat = int(np.argmax(surplus))
    point, *cell = np.unravel_index(flat, B.shape)
    cell = list(cell)
    admitted = []
    for entry in reversed(back):
        region = entry[2]
        local = tuple(c - sl.start for c, sl in zip(cell, region))
        if not all(0 <= c < sl.stop - sl.start for c, sl in zip(local, region)):
            continue  # outside the region this request's step covered: unchanged there
        if entry[0] < 0:  # an old request: point 0 may have been replaced by point 1
            if point == 0 and entry[3] is not None and entry[3][local]:
                point = 1
            continue
        idx, k, _, take0, take1, from1 = entry
        if (take1 if point else take0)[local]:
            admitted.append(order[idx].request_id)
            if point == 0 and from1 is not None and from1[local]:
                point = 1
            cell[k] -= 1
    return AdmissionPlan(on_time, frozenset(admitted), float(surplus.flat[flat]), deferred)
