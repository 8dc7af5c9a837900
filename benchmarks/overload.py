"""``seallm`` vs ``fcfs`` from below to well past capacity, in the device simulator (torch-free).

Two 7B-class services share one simulated H100 (roofline cost model; KV pool 8 GiB, swap
space 2 GiB, swap preemption for both policies, 512-token iterations): ``a`` is Llama-2-7B
shaped (512 KiB of KV per token), ``b`` Qwen2-7B shaped (GQA, 56 KiB per token).
Workloads: ``long-prompt`` (synthetic Poisson arrivals, arXiv-summarization lengths for both
services: prompts of 1-4k tokens), ``azure`` (the Azure 2023 chat -> a and code -> b traces,
60 s from trace second 600 + 300 x seed: each seed a different window) and ``bursty`` (Gamma
arrivals with CV 3, ShareGPT lengths); ``bursty`` was not used to tune the scheduler. A
synthetic workload's arrivals last 60 s or longer, so that every run has about
``--min-requests`` (500) requests: a P99 over fewer is, in effect, the slowest request.
The capacity of a workload is
measured first: the total output throughput of FCFS at a heavy load (rate x8 of the base
rate); the sweep then runs loads of 0.5x to 4x that capacity (the offered output tokens/s
over capacity), the same requests for both policies at each load and seed. Writes
``benchmarks/results/overload.json``: per workload and load, each policy's output tokens/s,
normalized latency, P99 E2E and preemptions (median over seeds), the ratio of the two
policies' medians, and the paired ratios (seallm over fcfs on the same requests, per seed:
their median and range); ``--seallm-options`` sets the policy's knobs (JSON).

    python benchmarks/overload.py [--seeds 0 1 2 3 4] [--loads 0.5 1 1.5 2 3 4]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

from seallm.bench.metrics import compute_metrics
from seallm.bench.workload import AzureWorkload, LengthConfig, SyntheticWorkload, build_workload
from seallm.cost import DEVICES, RooflineCostModel
from seallm.cost.roofline import ModelShape
from seallm.kv import KVSpec, default_page_size_bytes
from seallm.sched import SchedulerConfig, make_policy
from seallm.sim import SimModel, simulate_device

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import write_json  # noqa: E402

H100 = DEVICES["h100-sxm"]
SHAPES = {"a": ModelShape(32, 4096, 11008, 32, 32, 128, 32000, 2),  # Llama-2-7B
          "b": ModelShape(28, 3584, 18944, 28, 4, 128, 152064, 2)}  # Qwen2-7B
MODELS = tuple(SimModel(n, KVSpec(s.num_layers, s.num_kv_heads, s.head_dim, s.dtype_bytes), RooflineCostModel(s, H100))
               for n, s in SHAPES.items())
PAGE = default_page_size_bytes([m.kv_spec for m in MODELS])
POLICIES = ("fcfs", "seallm")


def workload(name: str, rate_scale: float, seed: int, min_requests: int = 0):
    """The requests of workload ``name`` at ``rate_scale`` times its base rate: 60 s of
    arrivals, longer for a synthetic workload whose rate would give fewer than about
    ``min_requests`` requests (a P99 needs a few hundred)."""
    def span(total_rate: float) -> float:
        return max(60.0, min_requests / (total_rate * rate_scale))

    if name == "long-prompt":
        w = SyntheticWorkload(("a", "b"), total_rate=1.0, duration_s=span(1.0), rate_scale=rate_scale,
                              length_dists=(("*", "arxiv"),))
    elif name == "bursty":  # holdout: not used to tune the scheduler
        w = SyntheticWorkload(("a", "b"), total_rate=2.0, duration_s=span(2.0), rate_scale=rate_scale,
                              arrival="gamma", cv=3.0, length_dists=(("*", "sharegpt"),))
    elif name == "azure":  # 60 s of trace time (~700 requests at every rate); seed k replays trace second 600 + 300k
        w = AzureWorkload((("chat", "a"), ("code", "b")), window_start_s=600.0 + 300.0 * seed, duration_s=60.0,
                          rate_scale=rate_scale, lengths=LengthConfig(max_output_len=2048))
    else:
        raise ValueError(name)
    return build_workload(w, seed)


def run(policy: str, reqs, args) -> dict:
    options = json.loads(args.seallm_options) if policy == "seallm" and getattr(args, "seallm_options", None) else None
    d = simulate_device(reqs, MODELS, make_policy(policy, options), int(args.kv_gib * 2**30) // PAGE, PAGE,
                        SchedulerConfig(512, 128, "swap"), int(args.swap_gib * 2**30) // PAGE,
                        H100.host_link_bandwidth)
    o = compute_metrics(d.records, {m.name: None for m in MODELS}, ()).overall
    return {"output_tokens_per_s": o.output_throughput, "normalized_latency_s": o.normalized_latency_s,
            "p99_e2e_s": o.e2e.p99, "preemptions": d.num_preemptions, "swap_outs": d.num_swap_outs,
            "recomputes": d.num_preemptions - d.num_swap_outs, "makespan_s": d.makespan_s}


def offered(reqs) -> float:
    """Offered output tokens per second of arrival time."""
    span = max(r.arrival_s for r in reqs) - min(r.arrival_s for r in reqs)
    return sum(r.output_len for r in reqs) / max(span, 1e-9)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workloads", nargs="+", default=["long-prompt", "azure", "bursty"])
    ap.add_argument("--loads", nargs="+", type=float, default=[0.5, 1.0, 1.5, 2.0, 3.0, 4.0],
                    help="offered load as a multiple of the measured capacity")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    ap.add_argument("--seallm-options", default=None, help='seallm policy knobs as JSON, e.g. \'{"tail_guard_factor": 0.5}\'')
    ap.add_argument("--min-requests", type=int, default=500,
                    help="lengthen a synthetic workload's arrivals to about this many requests per run")
    ap.add_argument("--kv-gib", type=float, default=8.0)
    ap.add_argument("--swap-gib", type=float, default=2.0)
    ap.add_argument("--output", default=os.path.join(os.path.dirname(__file__), "results", "overload.json"))
    args = ap.parse_args()
    out = {"device": "h100-sxm (roofline)", "kv_gib": args.kv_gib, "swap_gib": args.swap_gib,
           "seeds": args.seeds, "seallm_options": json.loads(args.seallm_options or "{}"),
           "models": {n: s.__dict__ for n, s in SHAPES.items()}, "workloads": {}}
    t0 = time.time()
    for wname in args.workloads:
        heavy = workload(wname, 8.0, args.seeds[0])
        capacity = run("fcfs", heavy, args)["output_tokens_per_s"]
        base = offered(workload(wname, 1.0, args.seeds[0]))
        rows = []
        for load in args.loads:
            scale = load * capacity / base
            per = {p: [] for p in POLICIES}
            for seed in args.seeds:
                reqs = workload(wname, scale, seed, args.min_requests)
                for p in POLICIES:
                    per[p].append(run(p, reqs, args))
            med = {p: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for p, rs in per.items()}
            s, f = med["seallm"], med["fcfs"]
            ratios = {"throughput": s["output_tokens_per_s"] / f["output_tokens_per_s"],
                      "normalized_latency": s["normalized_latency_s"] / f["normalized_latency_s"],
                      "p99_e2e": s["p99_e2e_s"] / f["p99_e2e_s"]}
            keys = {"throughput": "output_tokens_per_s", "normalized_latency": "normalized_latency_s",
                    "p99_e2e": "p99_e2e_s"}
            paired = {}
            for name, k in keys.items():
                xs = [a[k] / b[k] for a, b in zip(per["seallm"], per["fcfs"])]
                paired[name] = {"median": statistics.median(xs), "min": min(xs), "max": max(xs)}
            rows.append({"load": load, "rate_scale": scale, "policies": med, "per_seed": per,
                         "seallm_over_fcfs": ratios, "paired_seallm_over_fcfs": paired})
            print(f"{wname:12s} load {load:4.1f}x (rate x{scale:.2f}): throughput {ratios['throughput']:.3f}  "
                  f"norm latency {ratios['normalized_latency']:.3f}  P99 {ratios['p99_e2e']:.3f}  "
                  f"(paired: {paired['throughput']['median']:.3f} {paired['normalized_latency']['median']:.3f} "
                  f"{paired['p99_e2e']['median']:.3f})  "
                  f"preemptions seallm {s['preemptions']:.0f} / fcfs {f['preemptions']:.0f}  "
                  f"[{time.time() - t0:.0f} s]", flush=True)
        out["workloads"][wname] = {"capacity_output_tokens_per_s": capacity, "base_offered_tokens_per_s": base,
                                   "loads": rows}
    write_json(args.output, out)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
