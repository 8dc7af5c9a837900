"""SeaLLM's evaluation in the cluster simulator: seallm vs vLLM, AlpaServe and MuxServe
(torch-free).

The default cluster of ``seallm simulate --cluster default`` (32 H100s in 4 nodes, MuxServe's
19-model LLaMA mix: 12 x 7B, 4 x 13B, 2 x 30B, 1 x 65B; the Azure 2023 conv + code traces
split into the 19 services by power-law popularity, alpha 0.9; prompts capped at 1024 and
outputs at 1024 tokens). Every system places the services with its own algorithm from the
same measured loads and serves the same requests. The sweep scales the arrival rate
(``--rate-scales``; the trace window is ``--replay-s x rate scale`` trace seconds, so every
point replays ``--replay-s`` seconds of arrivals) and reports SLO attainment at several SLO
scales. ``--workloads`` adds traffic the placement was not tuned on: ``bursty`` (synthetic
Gamma arrivals, CV 4, ShareGPT lengths) and ``drift`` (the trace with popularity rotating
between services every quarter of the replay; placement sees only the whole-window
average: no system re-places).

Writes ``benchmarks/results/cluster_eval.json``: per workload, rate scale and system, the
metrics (normalized latency, P50/P99 E2E, TTFT/TPOT tails, SLO attainment by scale), the
ratios baseline / seallm, and the simulator's speed (wall seconds per simulated second,
iterations per wall second) and each placement's search time; and
``cluster_eval.png`` (normalized latency, P99 and SLO attainment at scale 5 vs rate scale).

    python benchmarks/cluster_eval.py [--rate-scales 4 16 32 48] [--replay-s 60] [--workloads trace]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace

from seallm.cluster.config import ClusterWorkload, default_cluster
from seallm.sim.compare import compare_systems

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import write_json  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
SYSTEMS = ("seallm", "vllm", "alpaserve", "muxserve")


def workload_of(kind: str, base: ClusterWorkload, rate_scale: float, replay_s: float) -> ClusterWorkload:
    if kind == "trace":
        return replace(base, duration_s=replay_s * rate_scale, rate_scale=rate_scale)
    if kind == "drift":
        return replace(base, duration_s=replay_s * rate_scale, rate_scale=rate_scale, drift_period_s=replay_s / 4)
    if kind == "bursty":  # the traces' mean rate (about 3.2 req/s at scale 1), Gamma CV 4
        return replace(base, traces=(), rate=3.2, arrival="gamma", cv=4.0, duration_s=replay_s, rate_scale=rate_scale)
    raise ValueError(f"unknown workload {kind!r}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate-scales", nargs="+", type=float, default=[4, 16, 32, 48])
    ap.add_argument("--replay-s", type=float, default=60.0, help="seconds of arrivals per point")
    ap.add_argument("--workloads", nargs="+", default=["trace"], choices=("trace", "bursty", "drift"))
    ap.add_argument("--slo-scales", nargs="+", type=float, default=[1.5, 2, 3, 5, 10])
    ap.add_argument("--systems", nargs="+", default=list(SYSTEMS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--output", default=os.path.join(RESULTS, "cluster_eval.json"))
    args = ap.parse_args()
    base = default_cluster()
    out = {"cluster": "default (32 x h100-sxm, 19 LLaMA models)", "replay_s": args.replay_s,
           "slo_scales": args.slo_scales, "seed": args.seed, "workloads": {}}
    for kind in args.workloads:
        out["workloads"][kind] = {}
        for x in args.rate_scales:
            cfg = replace(base, workload=workload_of(kind, base.workload, x, args.replay_s),
                          slo_scales=tuple(args.slo_scales))
            t0 = time.perf_counter()
            res = compare_systems(cfg, args.systems, args.seed)
            point = {}
            for name, r in res.items():
                s = r.summary()
                s.pop("per_model")
                s["sim_wall_per_simulated_s"] = r.run.wall_s / max(r.run.makespan_s, 1e-9)
                s["iterations_per_wall_s"] = r.run.num_steps / max(r.run.wall_s, 1e-9)
                point[name] = s
            ref = point.get("seallm")
            if ref:
                for name, s in point.items():
                    if name == "seallm":
                        continue
                    s["ratio_to_seallm"] = {
                        "normalized_latency": s["normalized_latency_s"] / ref["normalized_latency_s"],
                        "p99_e2e": s["p99_e2e_s"] / ref["p99_e2e_s"],
                        "slo_attainment": {k: (ref["slo_attainment"][k] / v if v else None)
                                           for k, v in s["slo_attainment"].items()}}
            n = len(next(iter(res.values())).run.records)
            out["workloads"][kind][str(x)] = {"requests": n, "systems": point}
            line = "  ".join(f"{name}: norm {s['normalized_latency_s']:.4f} p99 {s['p99_e2e_s']:.1f} "
                             f"slo5 {s['slo_attainment'].get('5.0', float('nan')):.3f}" for name, s in point.items())
            print(f"[{kind} x{x:g}: {n} req, {time.perf_counter() - t0:.0f} s] {line}", flush=True)
            write_json(args.output, out)
    plot(out, os.path.splitext(args.output)[0] + ".png")
    print(f"wrote {args.output}")
    return 0


def plot(out: dict, path: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    kinds = list(out["workloads"])
    fig = Figure(figsize=(13, 3.6 * len(kinds)))
    FigureCanvasAgg(fig)
    for row, kind in enumerate(kinds):
        pts = out["workloads"][kind]
        xs = sorted(pts, key=float)
        for col, (key, label, log) in enumerate((("normalized_latency_s", "normalized latency (s/token)", True),
                                                 ("p99_e2e_s", "P99 E2E (s)", True),
                                                 ("slo5", "SLO attainment (scale 5)", False))):
            ax = fig.add_subplot(len(kinds), 3, row * 3 + col + 1)
            for name in next(iter(pts.values()))["systems"]:
                ys = [pts[x]["systems"][name]["slo_attainment"].get("5.0") if key == "slo5"
                      else pts[x]["systems"][name][key] for x in xs]
                ax.plot([float(x) for x in xs], ys, marker="o", label=name)
            ax.set_xlabel(f"rate scale ({kind})")
            ax.set_ylabel(label)
            if log:
                ax.set_yscale("log")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.savefig(path, dpi=110, bbox_inches="tight")


if __name__ == "__main__":
    sys.exit(main())
