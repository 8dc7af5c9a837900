"""Adaptive replacement on drifting traffic, in the cluster simulator (torch-free).

The default cluster of ``seallm simulate --cluster default`` (32 H100s, MuxServe's 19-model
LLaMA mix, the Azure conv + code traces split by power-law popularity) with the popularity
rotating between services every ``--drift-periods`` seconds. Every variant starts from the
same placement (made from the whole window's average rates) and serves the same requests:

* ``seallm@none``: seallm's placement, never re-placed;
* ``seallm@fixed``: re-placed every ``--interval`` s with the last interval's rates, whatever
  the cost (AlpaServe's Clockwork++ rule, ``sr-replace-60``, applied to seallm's placement);
* ``seallm@adaptive``: SeaLLM's rule (``seallm.cluster.replacement``: sliding windows
  chosen by prediction error, switch when the predicted gain exceeds the switching cost);
* ``alpaserve@fixed``: Clockwork++ itself (AlpaServe's placement, re-placed on the interval);
* ``vllm``: dedicated devices, never re-placed (the reference deployment).

Writes ``benchmarks/results/replacement_eval.json``: per drift period, per variant, the
metrics (normalized latency, P50/P99 E2E, TTFT tails, SLO attainment), the number of checks
and switches, each switch's predicted gain and cost, and the ratios to ``seallm@adaptive``.

    python benchmarks/replacement_eval.py [--drift-periods 40 120] [--rate-scale 8] [--replay-s 240]
    python benchmarks/replacement_eval.py --cluster benchmarks/replacement_small.yaml --rate-scale 1 \
        --replay-s 480 --drift-periods 120 240 --variants seallm@adaptive seallm@none seallm@fixed

``--cluster FILE`` runs a cluster file instead (``replacement_small.yaml``: 8 A100s, five
services, 30 req/s of synthetic Poisson arrivals, popularity alpha 1.5).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace

from seallm.cluster.config import load_cluster
from seallm.sim.compare import compare_systems, format_comparison

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import write_json  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
VARIANTS = ("seallm@adaptive", "seallm@none", "seallm@fixed", "alpaserve@fixed", "vllm")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cluster", default="default", help="a cluster file (its workload's drift period is "
                    "replaced), or 'default'")
    ap.add_argument("--drift-periods", nargs="+", type=float, default=[40.0, 120.0])
    ap.add_argument("--rate-scale", type=float, default=8.0)
    ap.add_argument("--replay-s", type=float, default=240.0, help="seconds of arrivals")
    ap.add_argument("--interval", type=float, default=60.0, help="fixed mode's interval (s)")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS))
    ap.add_argument("--slo-scales", nargs="+", type=float, default=[2, 5, 10])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--output", default=os.path.join(RESULTS, "replacement_eval.json"))
    args = ap.parse_args()
    base = load_cluster(args.cluster)
    out = {"cluster": args.cluster, "rate_scale": args.rate_scale,
           "replay_s": args.replay_s, "fixed_interval_s": args.interval, "slo_scales": args.slo_scales,
           "seed": args.seed, "drift": {}}
    for period in args.drift_periods:
        if base.workload.traces:
            w = replace(base.workload, duration_s=args.replay_s * args.rate_scale, rate_scale=args.rate_scale,
                        drift_period_s=period)
        else:  # synthetic: seconds of arrivals at the file's rate x the scale
            w = replace(base.workload, duration_s=args.replay_s, rate_scale=args.rate_scale, drift_period_s=period)
        cfg = replace(base, workload=w, slo_scales=tuple(args.slo_scales),
                      replacement=replace(base.replacement, interval_s=args.interval))
        t0 = time.perf_counter()
        res = compare_systems(cfg, args.variants, args.seed)
        print(f"\n== drift period {period:g} s, rate scale {args.rate_scale:g} ({time.perf_counter() - t0:.0f} s)")
        print(format_comparison(res, cfg.slo_scales, reference="seallm@adaptive"))
        point = {}
        for name, r in res.items():
            s = r.summary()
            s.pop("per_model")
            s["sim_wall_per_simulated_s"] = r.run.wall_s / max(r.run.makespan_s, 1e-9)
            point[name] = s
        ref = point.get("seallm@adaptive")
        if ref:
            for s in point.values():
                s["ratio_to_adaptive"] = {
                    "normalized_latency": s["normalized_latency_s"] / ref["normalized_latency_s"],
                    "p99_e2e": s["p99_e2e_s"] / ref["p99_e2e_s"], "p99_ttft": s["p99_ttft_s"] / ref["p99_ttft_s"],
                    "slo_attainment": {k: (ref["slo_attainment"][k] / v if v else None)
                                       for k, v in s["slo_attainment"].items()}}
        out["drift"][str(period)] = point
        write_json(args.output, out)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
