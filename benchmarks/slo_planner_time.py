"""Wall time of one SLOs-Serve planning call on this CPU (target: under 5 ms with 100 pending
requests, well inside one 50 ms TPOT).

Two measures:

* the dynamic program itself (:func:`seallm.sched.slo_planner.plan_admission`) on synthetic
  states: ``new`` undecided requests spread over ``tiers`` TPOT tiers, beside ``old``
  admitted ones (half decoding, half prefilling), all of it considered (``max_new`` off);
* the policy's planning call (:meth:`SLOsServePolicy.plan`, what the scheduler runs) with 100
  pending and 100 decoding requests, which considers the ``max_new_per_plan`` (32) earliest
  deadlines and leaves the rest for the next call.

Each case runs ``--reps`` times after a warm-up; medians and p99 in ms. Writes
``benchmarks/results/slo_planner_time.json``.

    python benchmarks/slo_planner_time.py [--reps 200]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))

from seallm.core import SLO, Request, SamplingParams  # noqa: E402
from seallm.cost import MaxAffineCostModel  # noqa: E402
from seallm.sched.policy import BatchLimits  # noqa: E402
from seallm.sched.slo_planner import PlanRequest, WindowModel, plan_admission  # noqa: E402
from seallm.sched.slos_serve import SLOsServeConfig, SLOsServePolicy  # noqa: E402

CM = MaxAffineCostModel(((7.21e-5, 0.0, 0.0317),))  # OPT-13B TP2 (reference §1.3)
TIERS = (0.05, 0.1, 0.2)


def _state(new: int, old: int, tiers: int, seed: int = 0) -> list[PlanRequest]:
    rng = random.Random(seed)
    out = []
    for i in range(old):
        decoding = i % 2 == 0
        out.append(PlanRequest(f"o{i}", True, 0.0 if decoding else rng.uniform(0.05, 1.0),
                               0 if decoding else rng.randint(100, 1500), rng.randrange(tiers), rng.randint(5, 120)))
    for i in range(new):
        out.append(PlanRequest(f"n{i}", False, rng.uniform(0.05, 2.0), rng.randint(100, 1500), rng.randrange(tiers),
                               rng.randint(5, 120)))
    return out


def _time(fn, reps: int) -> dict:
    for _ in range(3):
        fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1e3)
    ts.sort()
    return {"median_ms": statistics.median(ts), "p99_ms": ts[min(len(ts) - 1, int(0.99 * len(ts)))],
            "max_ms": ts[-1]}


def _policy_case(pending: int, decoding: int) -> tuple[SLOsServePolicy, BatchLimits]:
    pol = SLOsServePolicy(SLOsServeConfig(cost_models={"m": CM.pieces}))
    rng = random.Random(1)
    slos = [SLO(ttft_slowdown=5.0, tpot=0.1), SLO(ttft_slowdown=5.0, tpot=0.05)]
    for i in range(decoding):
        r = Request(f"d{i}", "m", [5] * rng.randint(100, 1500), SamplingParams(max_tokens=300), 0.0,
                    slo=slos[i % 2])
        pol.on_arrival(r, 0.0)
        r.num_computed_tokens = r.num_prompt_tokens
        r.output_token_ids.append(7)
        r.first_token_time = 0.5
        pol._state[r.request_id].admission = "guaranteed"
    for i in range(pending):
        r = Request(f"p{i}", "m", [5] * rng.randint(100, 1500), SamplingParams(max_tokens=300),
                    1.0 + 0.001 * i, slo=slos[i % 2])
        pol.on_arrival(r, r.arrival_time)
    limits = BatchLimits(8192, 512, 10**6, lambda rid: 0, lambda m, n: (n + 15) // 16)
    return pol, limits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=200)
    args = ap.parse_args()
    cases = {}
    for new, old, tiers in ((32, 100, 2), (100, 100, 1), (100, 100, 2), (100, 0, 2), (100, 100, 3)):
        reqs = _state(new, old, tiers)
        w = WindowModel(CM, TIERS[:tiers], 8192)
        cases[f"dp new={new} old={old} tiers={tiers}"] = _time(
            lambda: plan_admission(reqs, w, 10**6, 0.0), args.reps)

    def policy_call():
        pol, limits = _policy_case(100, 100)
        t0 = time.perf_counter()
        pol.plan("m", 1.2, limits)
        return time.perf_counter() - t0

    ts = sorted(policy_call() * 1e3 for _ in range(args.reps))
    cases["policy plan, 100 pending + 100 decoding (max_new_per_plan 32)"] = {
        "median_ms": statistics.median(ts), "p99_ms": ts[int(0.99 * len(ts))], "max_ms": ts[-1]}
    for k, v in cases.items():
        print(f"{k:70s} median {v['median_ms']:6.2f} ms  p99 {v['p99_ms']:6.2f} ms")
    from common import write_result

    print("wrote", write_result("slo_planner_time", {"benchmark": "slo_planner_time", "target_ms": 5.0,
                                                      "reps": args.reps, "cases": cases}))


if __name__ == "__main__":
    main()
