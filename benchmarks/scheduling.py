"""SeaLLM doubling-budget scheduling vs FCFS on the real engine, through HTTP.

The demo deployment (a Llama-style and a Qwen2-style model on one device, one KV pool)
serves the Azure LLM inference traces 2023 replayed by ``seallm bench``: chat -> demo-llama,
code -> demo-qwen2. The same seeded requests are replayed at several loads (rate scales)
against ``seallm serve --scheduling-policy fcfs`` and ``seallm`` (plus ablations at the
highest load). The served-alone latency behind SLO attainment is calibrated once and shared
by every run. Writes ``benchmarks/results/scheduling.json`` and ``scheduling.png``.

    python benchmarks/scheduling.py [--rate-scales 0.5 1 2 4] [--duration 30]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
from common import free_port, write_result  # noqa: E402

ABLATIONS = {
    "seallm": {},
    "seallm-service-agnostic": {"service_aware": False},
    "seallm-fixed-budget": {"doubling": False},
    "seallm-no-preemption": {"preemption": False},
}



def start(policy: str, options: dict, models: dict[str, str], args) -> tuple[subprocess.Popen, str, str]:
    import yaml

    port = free_port()
    cfg = {"models": [{"name": n, "path": p} for n, p in models.items()], "scheduling_policy": policy,
           "policy_options": options, "port": port, "kv_cache_memory": args.kv_cache_memory,
           "max_num_batched_tokens": 512, "max_num_seqs": args.max_num_seqs}
    fd, path = tempfile.mkstemp(suffix=".yaml")
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(cfg, f)
    proc = subprocess.Popen([sys.executable, "-m", "seallm.cli", "serve", "--config", path, "--log-level", "warning"])
    from seallm.demo import wait_healthy

    base = f"http://127.0.0.1:{port}"
    wait_healthy(base, proc, timeout=300)
    return proc, base, path


def stop(proc: subprocess.Popen, cfg_path: str) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
    os.unlink(cfg_path)


def bench(base: str, args, rate: float, alone=None, calibrate: bool = False):
    from seallm.bench import run_benchmark
    from seallm.bench.config import BenchConfig, CalibrationConfig, ClientConfig
    from seallm.bench.workload import AzureWorkload, LengthConfig

    wl = AzureWorkload(traces=(("chat", "demo-llama"), ("code", "demo-qwen2")), window_start_s=args.window_start,
                       duration_s=args.duration, rate_scale=rate,
                       lengths=LengthConfig(max_input_len=args.max_input_len, max_output_len=args.max_output_len))
    cfg = BenchConfig(workload=wl, client=ClientConfig(base_url=base, progress=False, timeout_s=args.timeout),
                      calibration=CalibrationConfig(enabled=calibrate), alone=alone or {},
                      slo_scales=(5.0, 10.0), seed=args.seed)
    return run_benchmark(cfg)


def summary(res) -> dict:
    o = res.metrics.overall
    per = {m: dict(normalized_latency_s=s.normalized_latency_s, p99_e2e_s=s.e2e.p99, mean_e2e_s=s.e2e.mean,
                   slo_attainment={str(k): v for k, v in (s.slo_attainment or {}).items()})
           for m, s in res.metrics.per_model.items()}
    return dict(requests=o.num_requests, completed=o.num_completed, failed=o.num_failed,
                normalized_latency_s=o.normalized_latency_s, p50_e2e_s=o.e2e.p50, p99_e2e_s=o.e2e.p99,
                mean_e2e_s=o.e2e.mean, mean_ttft_s=o.ttft.mean, p99_ttft_s=o.ttft.p99,
                slo_attainment={str(k): v for k, v in (o.slo_attainment or {}).items()},
                output_throughput=o.output_throughput, per_model=per)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate-scales", type=float, nargs="+", default=[0.5, 1.0, 2.0, 4.0])
    ap.add_argument("--duration", type=float, default=30.0, help="seconds of trace per run")
    ap.add_argument("--window-start", type=float, default=600.0)
    ap.add_argument("--max-input-len", type=int, default=1024)
    ap.add_argument("--max-output-len", type=int, default=128)
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--ablations", nargs="*", default=list(ABLATIONS)[1:])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--kv-cache-memory", default="1GiB", help="KV pool of the device (smaller: memory-bound sharing)")
    ap.add_argument("--max-num-seqs", type=int, default=128)
    ap.add_argument("--name", default="scheduling", help="result file name")
    args = ap.parse_args()

    from seallm.bench.baseline import AloneOverride
    from seallm.demo import ensure_demo_checkpoints

    models = ensure_demo_checkpoints()
    out: dict = dict(workload=dict(traces={"chat": "demo-llama", "code": "demo-qwen2"}, duration_s=args.duration,
                                   window_start_s=args.window_start, max_input_len=args.max_input_len,
                                   max_output_len=args.max_output_len, seed=args.seed),
                     deployment=dict(kv_cache_memory=args.kv_cache_memory, max_num_seqs=args.max_num_seqs),
                     runs={})
    # One served-alone baseline for every run: calibrated on an idle FCFS server.
    proc, base, cfgp = start("fcfs", {}, models, args)
    try:
        cal = bench(base, args, min(args.rate_scales), calibrate=True)
        alone = {m: AloneOverride(a.ttft_base_s, a.ttft_per_token_s, a.tpot_s) for m, a in cal.alone.items() if a}
        out["alone"] = {m: dict(ttft_base_s=a.ttft_base_s, ttft_per_token_s=a.ttft_per_token_s, tpot_s=a.tpot_s)
                        for m, a in alone.items()}
        out["unloaded_mean_e2e_s"] = cal.metrics.overall.e2e.mean
        for rate in args.rate_scales:
            out["runs"].setdefault("fcfs", {})[str(rate)] = s = summary(bench(base, args, rate, alone))
            print(f"fcfs   x{rate}: norm {s['normalized_latency_s']:.4f} s/tok, P99 {s['p99_e2e_s']:.2f} s, "
                  f"SLO@5 {s['slo_attainment'].get('5.0')}", flush=True)
    finally:
        stop(proc, cfgp)
    top = max(args.rate_scales)
    for name in ["seallm"] + list(args.ablations):
        proc, base, cfgp = start("seallm", ABLATIONS[name], models, args)
        try:
            for rate in (args.rate_scales if name == "seallm" else [top]):
                out["runs"].setdefault(name, {})[str(rate)] = s = summary(bench(base, args, rate, alone))
                print(f"{name} x{rate}: norm {s['normalized_latency_s']:.4f} s/tok, P99 {s['p99_e2e_s']:.2f} s, "
                      f"SLO@5 {s['slo_attainment'].get('5.0')}", flush=True)
        finally:
            stop(proc, cfgp)
    f, sl = out["runs"]["fcfs"][str(top)], out["runs"]["seallm"][str(top)]
    out["highest_load"] = dict(
        rate_scale=top,
        normalized_latency_ratio_fcfs_over_seallm=f["normalized_latency_s"] / sl["normalized_latency_s"],
        p99_ratio_fcfs_over_seallm=f["p99_e2e_s"] / sl["p99_e2e_s"],
        slo_attainment_ratio_seallm_over_fcfs={k: (sl["slo_attainment"][k] / f["slo_attainment"][k]
                                                   if f["slo_attainment"].get(k) else None)
                                               for k in sl["slo_attainment"]},
        fcfs_p99_over_unloaded_mean=f["p99_e2e_s"] / out["unloaded_mean_e2e_s"])
    print(json.dumps(out["highest_load"], indent=1))
    path = write_result(args.name, out)
    plot(out, os.path.splitext(path)[0] + ".png")
    print("wrote", path)


def plot(out: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for name in ("fcfs", "seallm"):
        runs = out["runs"][name]
        xs = sorted(runs, key=float)
        axes[0].plot([float(x) for x in xs], [runs[x]["normalized_latency_s"] for x in xs], "o-", label=name)
        axes[1].plot([float(x) for x in xs], [runs[x]["p99_e2e_s"] for x in xs], "o-", label=name)
        axes[2].plot([float(x) for x in xs], [runs[x]["slo_attainment"].get("5.0") for x in xs], "o-", label=name)
    for ax, title in zip(axes, ("normalized latency (s/token)", "P99 E2E latency (s)", "SLO attainment (scale 5)")):
        ax.set_xlabel("rate scale")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
