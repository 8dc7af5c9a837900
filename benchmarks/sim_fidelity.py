"""Simulator fidelity: the same deployment and requests on ``seallm serve`` over HTTP and in
``seallm simulate``.

The demo deployment (demo-llama + demo-qwen2 on the CPU, one unified KV pool, the seallm
policy with swap preemption, the scheduling benchmark's settings) first serves a warm-up
window of the Azure traces so that it learns its service profiles (``profiles_path``: the
step-time models refit from the iterations it ran, and the engine's per-iteration and
per-request overheads). Then, for every rate scale, the same seeded requests of a measured
window are replayed by ``seallm bench`` against a server started from those profiles, and
simulated by ``seallm simulate --config`` from the same profiles (nothing measured in the
replayed run itself reaches the simulator). Reported per rate scale: mean and P99 E2E, mean
and P99 TTFT, output throughput, both ways, and the simulator's relative errors. The
issue's target: mean latency within 10 %, P99 within 15 %.

Writes ``benchmarks/results/sim_fidelity.json``.

    python benchmarks/sim_fidelity.py [--rate-scales 1 2] [--duration 30] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import free_port, serve_deployment, stop_deployment, write_result  # noqa: E402

KEYS = ("mean_e2e_s", "p99_e2e_s", "mean_ttft_s", "p99_ttft_s", "output_throughput")


def deployment(models: dict[str, str], args, profiles: str) -> dict:
    return {"models": [{"name": n, "path": p} for n, p in models.items()], "scheduling_policy": "seallm",
            "port": free_port(), "kv_cache_memory": args.kv_cache_memory, "max_num_batched_tokens": 512,
            "max_num_seqs": 128, "preemption_mode": "swap", "profiles_path": profiles,
            "max_waiting_requests": None, "max_waiting_tokens": None, "max_queue_delay_s": None}


def workload(args, rate: float, window_start: float):
    from seallm.bench.workload import AzureWorkload, LengthConfig

    return AzureWorkload(traces=(("chat", "demo-llama"), ("code", "demo-qwen2")), window_start_s=window_start,
                         duration_s=args.duration, rate_scale=rate,
                         lengths=LengthConfig(scale=args.length_scale, max_input_len=args.max_input_len))


def serve_and_bench(cfg: dict, args, rate: float, window_start: float) -> dict:
    from seallm.bench import run_benchmark
    from seallm.bench.config import BenchConfig, CalibrationConfig, ClientConfig

    proc, base, path = serve_deployment(cfg, timeout=300)
    try:
        res = run_benchmark(BenchConfig(workload=workload(args, rate, window_start),
                                        client=ClientConfig(base_url=base, progress=False, timeout_s=600.0),
                                        calibration=CalibrationConfig(enabled=False), seed=args.seed))
    finally:
        stop_deployment(proc, path)
    o = res.metrics.overall
    return dict(requests=o.num_requests, completed=o.num_completed, mean_e2e_s=o.e2e.mean, p99_e2e_s=o.e2e.p99,
                mean_ttft_s=o.ttft.mean, p99_ttft_s=o.ttft.p99, output_throughput=o.output_throughput)


def simulate(cfg: dict, args, rate: float, tmp: str) -> dict:
    import yaml

    from seallm.cli import main

    dep, out = os.path.join(tmp, "sim.yaml"), os.path.join(tmp, "sim.json")
    with open(dep, "w") as f:
        yaml.safe_dump(cfg, f)
    rc = main(["simulate", "--config", dep, "--device", "cpu", "--trace", "chat=demo-llama", "--trace",
               "code=demo-qwen2", "--window-start", str(args.window_start), "--duration", str(args.duration),
               "--rate-scale", str(rate), "--length-scale", str(args.length_scale), "--max-input-len",
               str(args.max_input_len), "--seed", str(args.seed), "--output", out])
    if rc != 0:
        raise RuntimeError(f"seallm simulate failed ({rc})")
    with open(out) as f:
        p = json.load(f)["policies"]["seallm"]
    return {k: p[k] for k in KEYS} | dict(iterations=p["iterations"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate-scales", nargs="+", type=float, default=[1.0, 2.0])
    ap.add_argument("--duration", type=float, default=30.0, help="trace seconds per run")
    ap.add_argument("--window-start", type=float, default=660.0, help="the measured window")
    ap.add_argument("--warmup-window-start", type=float, default=300.0, help="the warm-up window")
    ap.add_argument("--length-scale", type=float, default=0.5)
    ap.add_argument("--max-input-len", type=int, default=1024)
    ap.add_argument("--kv-cache-memory", default="24MiB")
    ap.add_argument("--repeats", type=int, default=2, help="server runs per rate scale (median)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--name", default="sim_fidelity")
    args = ap.parse_args()

    from seallm.demo import ensure_demo_checkpoints

    models = ensure_demo_checkpoints()
    tmp = tempfile.mkdtemp(prefix="seallm-fidelity-")
    live = os.path.join(tmp, "profiles.json")
    frozen = os.path.join(tmp, "profiles-warm.json")
    out = dict(benchmark="sim_fidelity", deployment="demo (demo-llama + demo-qwen2, CPU, seallm, swap)",
               duration_s=args.duration, window_start_s=args.window_start, length_scale=args.length_scale,
               kv_cache_memory=args.kv_cache_memory, repeats=args.repeats,
               targets=dict(mean_rel_error=0.10, p99_rel_error=0.15), rates={})
    try:
        warm = serve_and_bench(deployment(models, args, live), args, 1.0, args.warmup_window_start)
        print(f"warm-up: {warm['completed']} requests", flush=True)
        shutil.copy(live, frozen)
        with open(frozen) as f:
            out["profiles"] = json.load(f)
        for rate in args.rate_scales:
            runs = []
            for _ in range(args.repeats):
                shutil.copy(frozen, live)  # every run starts from the warm-up's profiles
                runs.append(serve_and_bench(deployment(models, args, live), args, rate, args.window_start))
            served = {k: statistics.median(r[k] for r in runs) for k in KEYS}
            sim = simulate(deployment(models, args, frozen), args, rate, tmp)
            err = {k: sim[k] / served[k] - 1 for k in KEYS}
            out["rates"][str(rate)] = dict(served=served, served_runs=runs, simulated=sim, relative_error=err,
                                           mean_within_target=abs(err["mean_e2e_s"]) <= 0.10,
                                           p99_within_target=abs(err["p99_e2e_s"]) <= 0.15)
            print(f"x{rate:g}: " + "  ".join(f"{k} served {served[k]:.3f} sim {sim[k]:.3f} ({err[k]:+.0%})"
                                               for k in KEYS), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("wrote", write_result(args.name, out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
