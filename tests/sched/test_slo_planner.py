"""SLOs-Serve's admission DP on hand-checked cases and against brute force (torch-free)."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest

from seallm.cost import MaxAffineCostModel
from seallm.sched.slo_planner import PlanRequest, WindowModel, plan_admission

# 1 ms per token plus 10 ms per iteration; no context term.
CM = MaxAffineCostModel(((1e-3, 0.0, 0.010),))
CAP = 2048
FULL_RATE = CAP / (CAP * 1e-3 + 0.010)  # prefill tokens/s with no decoding request (~995)


def window(*tpots: float) -> WindowModel:
    return WindowModel(CM, tuple(tpots), CAP)


def new(rid, deadline, prefill, tier=0, pages=0):
    return PlanRequest(rid, False, deadline, prefill, tier, pages)


def old(rid, deadline, prefill, tier=0, pages=0):
    return PlanRequest(rid, True, deadline, prefill, tier, pages)


def test_window_model_inverts_the_cost_model():
    w = window(0.05, 0.1)
    assert w.batch_tokens(0.05) == 40  # (0.05 - 0.01) / 1e-3
    assert w.period(0) == (0.05, 40)
    assert w.startup_tokens() == pytest.approx(0.010 * FULL_RATE)  # 10 ms of fixed cost at the full rate
    rate, ok = w.prefill_rate(np.array([[0, 39, 40, 41], [0, 0, 0, 0]], dtype=float))
    # 39 decodes at 20 tokens/s each leave 1 token per 50 ms batch: 20 tokens/s of prefill.
    assert rate[0] == pytest.approx(FULL_RATE)
    assert rate[1] == pytest.approx(20.0)
    assert rate[2] == pytest.approx(0.0, abs=1e-9)
    assert list(ok) == [True, True, True, False]


def test_window_model_rejects_bad_tiers():
    with pytest.raises(ValueError):
        window(0.1, 0.05)
    with pytest.raises(ValueError):
        window()
    with pytest.raises(ValueError):
        plan_admission([new("a", 1.0, 1, tier=3)], window(0.1), 100, 0.0)


def test_admits_what_the_prefill_capacity_allows_by_the_deadline():
    # By t = 1 s the device prefills FULL_RATE less 10 ms of start-up: ~985 tokens.
    w = window(0.1)
    assert plan_admission([new("a", 1.0, 900)], w, 1000, 0.0).admitted == {"a"}
    assert plan_admission([new("a", 1.0, 1000)], w, 1000, 0.0).admitted == frozenset()
    # Two requests of one deadline that do not fit together: the one leaving more surplus.
    p = plan_admission([new("big", 1.0, 600), new("small", 1.0, 500)], w, 1000, 0.0)
    assert p.admitted == {"small"}
    assert p.surplus_tokens == pytest.approx(0.99 * FULL_RATE - 500)
    # An earlier deadline leaves the later request the time between the two.
    p = plan_admission([new("a", 0.5, 400), new("b", 1.0, 500)], w, 1000, 0.0)
    assert p.admitted == {"a", "b"}


def test_more_requests_beat_one_big_one():
    w = window(0.1)
    reqs = [new("big", 1.0, 950)] + [new(f"s{i}", 1.0, 300) for i in range(3)]
    assert plan_admission(reqs, w, 1000, 0.0).admitted == {"s0", "s1", "s2"}


def test_a_flat_cost_piece_does_not_swamp_the_start_up():
    # max(6.04e-5 N + 14 ms, 30 ms): the flat piece has no per-token slope.
    w = WindowModel(MaxAffineCostModel(((6.04e-5, 0.0, 0.014), (0.0, 0.0, 0.030))), (0.05, 0.1), 8192)
    assert 0 < w.startup_tokens() < 600
    assert plan_admission([new("a", 1.0, 500)], w, 1000, 0.0).admitted == {"a"}


def test_decode_pace_limits_the_decoding_set():
    # A 50 ms TPOT allows 40 decoding requests (one 40-token batch per 50 ms); 39 decode now.
    w = window(0.05)
    reqs = [new(f"n{i}", 10.0, 1) for i in range(3)]
    p = plan_admission(reqs, w, 1000, 0.0, old_decoding=[39])
    assert len(p.admitted) == 1 and p.feasible


def test_decoding_requests_slow_the_prefill_of_later_ones():
    # Tier 0: 50 ms. With 39 decoding, prefill runs at 20 tokens/s: 1 s gives 20 - 10 tokens.
    w = window(0.05)
    assert plan_admission([new("a", 1.0, 9)], w, 1000, 0.0, old_decoding=[39]).admitted == {"a"}
    assert plan_admission([new("a", 1.0, 11)], w, 1000, 0.0, old_decoding=[39]).admitted == frozenset()


def test_memory_bounds_the_admitted_set():
    w = window(0.1)
    reqs = [new("p6", 5.0, 10, pages=6), new("p5", 5.0, 10, pages=5), new("p4", 5.0, 10, pages=4)]
    p = plan_admission(reqs, w, 10, 0.0)
    assert len(p.admitted) == 2 and "p4" in p.admitted
    assert plan_admission(reqs, w, 3, 0.0).admitted == frozenset()
    assert plan_admission(reqs, w, 15, 0.0).admitted == {"p6", "p5", "p4"}


def test_between_equal_sets_the_earlier_requests_are_guaranteed():
    w = window(1.0)
    reqs = [new(f"r{i}", 5.0 + 0.001 * i, 10, pages=15) for i in range(8)]
    assert plan_admission(reqs, w, 64, 0.0).admitted == {"r0", "r1", "r2", "r3"}


def test_a_new_request_may_not_make_an_admitted_one_late():
    w = window(0.1)
    # The old request alone finishes its 900-token prefill by t = 1 s (985 available).
    o = old("o", 1.0, 900)
    assert plan_admission([o], w, 1000, 0.0).feasible
    # A new 200-token request due at 0.5 s would fit by itself but push "o" past its deadline.
    p = plan_admission([o, new("n", 0.5, 200)], w, 1000, 0.0)
    assert p.feasible and p.admitted == frozenset()
    # One due after "o" with room left is admitted.
    p = plan_admission([o, new("n", 2.0, 500)], w, 1000, 0.0)
    assert p.admitted == {"n"}
    # Memory held by the old request counts too.
    p = plan_admission([old("o", 1.0, 10, pages=8), new("n", 2.0, 10, pages=3)], w, 10, 0.0)
    assert p.admitted == frozenset()


def test_a_late_old_request_blocks_only_the_new_ones_that_add_to_its_lateness():
    w = window(0.1)
    o = old("o", 0.5, 900)  # ~487 tokens by 0.5 s: late whatever is admitted
    p = plan_admission([o, new("before", 0.2, 100), new("after", 5.0, 100)], w, 1000, 0.0)
    assert not p.feasible
    assert p.admitted == {"after"}


def test_requests_beyond_max_new_are_deferred_latest_deadline_first():
    w = window(0.1)
    reqs = [new(f"r{i}", 1.0 + i, 10) for i in range(5)]
    p = plan_admission(reqs, w, 1000, 0.0, max_new=2)
    assert p.deferred == {"r2", "r3", "r4"}
    assert p.admitted == {"r0", "r1"}


def _brute_force(reqs, w, free_pages, now, old_decoding):
    """Largest admissible subset, by the same fluid model, checking every subset."""
    order = sorted(reqs, key=lambda r: max(r.deadline_s, now))
    K = len(w.tier_tpots)
    for k in range(len(reqs), 0, -1):
        for subset in itertools.combinations(range(len(order)), k):
            chosen = [order[i] for i in subset]
            if sum(r.pages for r in chosen) > free_pages:
                continue
            counts = np.asarray(old_decoding, dtype=float).copy()
            b, t = -w.startup_tokens(None), now
            ok = True
            for r in chosen:
                d = max(r.deadline_s, now)
                rate, _ = w.prefill_rate(counts.reshape(K, 1))
                b += (d - t) * float(rate[0])
                t = d
                b -= r.prefill_tokens
                counts[r.tier] += 1
                _, feas = w.prefill_rate(counts.reshape(K, 1))
                if b < -1e-6 or not feas[0]:
                    ok = False
                    break
            if ok:
                return k
    return 0


@pytest.mark.parametrize("seed", range(30))
def test_matches_brute_force_when_one_resource_binds(seed):
    rng = random.Random(seed)
    w = window(0.05, 0.1) if seed % 2 else window(0.1)
    K = len(w.tier_tpots)
    n = rng.randint(3, 8)
    memory_bound = seed % 3 == 0
    reqs = []
    for i in range(n):
        prefill = 0 if memory_bound else rng.randint(50, 800)
        reqs.append(new(f"r{i}", rng.uniform(0.1, 3.0), prefill, rng.randrange(K),
                        rng.randint(1, 9) if memory_bound else 0))
    free = rng.randint(5, 25) if memory_bound else 10**9
    old_dec = [rng.randint(0, 20) for _ in range(K)]
    p = plan_admission(reqs, w, free, 0.0, old_decoding=old_dec)
    assert len(p.admitted) == _brute_force(reqs, w, free, 0.0, old_dec)
    # The admitted set itself passes the check.
    chosen = [r for r in reqs if r.request_id in p.admitted]
    assert sum(r.pages for r in chosen) <= free
    assert _brute_force(chosen, w, free, 0.0, old_dec) == len(chosen)
