"""Many 7B models on one simulated GPU that holds two: seallm's load-aware residency against
the llama-swap / Ollama way, with realistic load costs.

The CPU benchmark (``model_swap.py``) loads ~57M models in tens of milliseconds, so there
the residency rule hardly matters. On a GPU a 7B model is 13-15 GB: a reload over PCIe from
the host weight cache takes about 0.6 s, a cold read from disk about 7 s. This benchmark
runs the replica that ``seallm serve`` builds (same scheduler, policies, residency manager,
engine loop; ``seallm.sim.simulate_device``) with roofline step times of an A100-80GB:

* six models, Llama-2-7B and Qwen2-7B shapes alternating, ``max_resident_models: 2``,
  24 GiB of KV pool, 16 GiB of swap space, 2048-token iterations;
* ``seallm``: scheduling policy ``seallm``, residency ``seallm`` (loads by urgency, evicts the
  least requested idle model, preempts a drain that outlasts the load times), host weight
  cache (reload at 25 GB/s);
* ``lru``: FCFS, residency ``lru`` (loads in arrival order, evicts the least recently used,
  waits for drains), every load from disk at 2 GB/s: llama-swap / Ollama;
* ablations, one change at a time.

Workloads (``--workloads``): ``powerlaw`` (popularity alpha 1, Gamma arrivals cv 2, the
Azure-like shape ``model_swap.py`` uses), and two held out from any tuning: ``flat-bursty``
(alpha 0.5, cv 4) and ``skewed-poisson`` (alpha 1.5, Poisson); ShareGPT lengths (outputs
up to 1024 tokens), 300 s each, at ``--rate-scales`` times ``--base-rate`` req/s over the six
models. Seeds ``--seeds``; medians over seeds; SLO attainment against the served-alone
latency calibrated on the same simulated device. Writes
``benchmarks/results/model_swap_sim.json``.

    python benchmarks/model_swap_sim.py [--rate-scales 1 4 10] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from common import write_result  # noqa: E402

from seallm.bench.metrics import compute_metrics  # noqa: E402
from seallm.bench.workload import LengthConfig, SyntheticWorkload, build_workload  # noqa: E402
from seallm.cost import DEVICES, RooflineCostModel  # noqa: E402
from seallm.cost.roofline import ModelShape  # noqa: E402
from seallm.kv import KVSpec, default_page_size_bytes  # noqa: E402
from seallm.sched import SchedulerConfig, make_policy  # noqa: E402
from seallm.sim import SimModel, simulate_device  # noqa: E402
from seallm.sim.runner import SimConfig, simulated_alone_latency  # noqa: E402

A100 = DEVICES["a100-80gb"]
SHAPES = (ModelShape(32, 4096, 11008, 32, 32, 128, 32000, 2),  # Llama-2-7B
          ModelShape(28, 3584, 18944, 28, 4, 128, 152064, 2))  # Qwen2-7B
MODELS = tuple(SimModel(f"m{i}", KVSpec(s.num_layers, s.num_kv_heads, s.head_dim, s.dtype_bytes),
                        RooflineCostModel(s, A100), s.weights_bytes)
               for i, s in enumerate(SHAPES * 3))
PAGE = default_page_size_bytes([m.kv_spec for m in MODELS])
KV_PAGES = (24 << 30) // PAGE
SWAP_PAGES = (16 << 30) // PAGE
DISK, PCIE = 2e9, A100.host_link_bandwidth
# name: (scheduling policy, residency policy, reload bandwidth, residency_preempt_after)
SYSTEMS = {
    "seallm": ("seallm", "seallm", PCIE, 1.0),
    "lru": ("fcfs", "lru", DISK, None),
    "fcfs+lru+host-cache": ("fcfs", "lru", PCIE, None),
    "seallm-sched+lru+host-cache": ("seallm", "lru", PCIE, None),
    "seallm-no-preempt": ("seallm", "seallm", PCIE, None),
}
WORKLOADS = {"powerlaw": (1.0, "gamma", 2.0), "flat-bursty": (0.5, "gamma", 4.0), "skewed-poisson": (1.5, "poisson", 1.0)}


def run(system: str, reqs, alone) -> dict:
    sched, residency, reload_bw, preempt_after = SYSTEMS[system]
    t0 = time.perf_counter()
    d = simulate_device(reqs, MODELS, make_policy(sched), KV_PAGES, PAGE, SchedulerConfig(2048, 128, "swap"),
                        swap_pages=SWAP_PAGES, swap_bandwidth=PCIE, max_resident_models=2,
                        residency_policy=residency, residency_preempt_after=preempt_after, disk_bandwidth=DISK,
                        host_cache_bandwidth=reload_bw)
    o = compute_metrics(d.records, alone, (5.0, 10.0)).overall
    return dict(requests=o.num_requests, failed=o.num_failed, mean_ttft_s=o.ttft.mean, p99_ttft_s=o.ttft.p99,
                normalized_latency_s=o.normalized_latency_s, slo5=o.slo_attainment[5.0], slo10=o.slo_attainment[10.0],
                loads_per_minute=d.num_loads / (d.makespan_s / 60) if d.makespan_s else 0.0,
                preemptions=d.num_preemptions, wall_s=time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    ap.add_argument("--rate-scales", type=float, nargs="+", default=[1.0, 4.0, 10.0])
    ap.add_argument("--base-rate", type=float, default=0.025, help="req/s over the six models at scale 1")
    ap.add_argument("--duration", type=float, default=300.0)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=list(SYSTEMS))
    ap.add_argument("--name", default="model_swap_sim")
    args = ap.parse_args()
    out: dict = {"workloads": {}, "setup": dict(
        device="a100-80gb (roofline)", models=[f"{m.name}: {m.weights_bytes / 1e9:.1f} GB" for m in MODELS],
        max_resident_models=2, kv_cache_gib=24, swap_space_gib=16, disk_bandwidth=DISK, host_cache_bandwidth=PCIE,
        base_rate=args.base_rate, duration_s=args.duration, seeds=args.seeds, systems={k: list(v) for k, v in SYSTEMS.items()})}
    for wname in args.workloads:
        alpha, arrival, cv = WORKLOADS[wname]
        out["workloads"][wname] = {}
        for scale in args.rate_scales:
            runs: dict[str, list[dict]] = {s: [] for s in args.systems}
            for seed in args.seeds:
                wl = SyntheticWorkload(models=tuple(m.name for m in MODELS), total_rate=args.base_rate,
                                       duration_s=args.duration, alpha=alpha, arrival=arrival, cv=cv, rate_scale=scale,
                                       lengths=LengthConfig(max_output_len=1024))
                reqs = build_workload(wl, seed)
                alone = simulated_alone_latency(SimConfig(MODELS, KV_PAGES, PAGE), reqs)
                for system in args.systems:
                    runs[system].append(run(system, reqs, alone))
                    print(wname, scale, seed, system, {k: round(v, 3) for k, v in runs[system][-1].items()}, flush=True)
            med = {s: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for s, rs in runs.items()}
            entry: dict = dict(runs=runs, median=med)
            if "seallm" in med and "lru" in med:
                s, b = med["seallm"], med["lru"]
                per_seed = [(rb["mean_ttft_s"] / rs["mean_ttft_s"]) for rs, rb in zip(runs["seallm"], runs["lru"])]
                entry["lru_over_seallm"] = dict(
                    mean_ttft=b["mean_ttft_s"] / s["mean_ttft_s"], mean_ttft_range=[min(per_seed), max(per_seed)],
                    p99_ttft=b["p99_ttft_s"] / s["p99_ttft_s"],
                    normalized_latency=b["normalized_latency_s"] / s["normalized_latency_s"],
                    slo5_seallm_over_lru=s["slo5"] / b["slo5"] if b["slo5"] else None,
                    slo10_seallm_over_lru=s["slo10"] / b["slo10"] if b["slo10"] else None)
                print(wname, scale, "ratios", entry["lru_over_seallm"], flush=True)
            out["workloads"][wname][str(scale)] = entry
    print(write_result(args.name, out))


if __name__ == "__main__":
    main()
