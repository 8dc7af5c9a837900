"""Models loaded and unloaded at run time: reload speed, and many models on a replica that
holds two, seallm's load-aware residency against the llama-swap / Ollama way.

Part 1 (``reload``): a ~125M Llama checkpoint loaded by the engine's ``WeightLoader`` from
disk (safetensors read), from the host weight cache, and, for reference, the bytes of its
weights copied once in memory (``copy_`` into touched memory: the local memory-copy bandwidth) and
a full model copy from the host cache into fresh tensors (what the CUDA path does, host to
device, here host to host). GB/s = weight
bytes / seconds. Medians of ``--repeats``.

Part 2 (``serve``): six random ~57M-parameter models (Llama and Qwen2 layouts) behind one
``seallm serve`` with ``max_resident_models: 2``; power-law popularity (alpha 1) with Gamma
arrivals (cv 2, bursty like the Azure traces), ShareGPT lengths scaled down, replayed by
``seallm bench`` against

* ``seallm``: scheduling policy ``seallm``, residency policy ``seallm`` (loads by urgency,
  evicts the least requested idle model), 8 GiB host weight cache;
* ``lru``: FCFS scheduling, residency ``lru`` (loads in arrival order, evicts the least
  recently used), no host cache (every load reads the checkpoint): llama-swap / Ollama.

Same seeded requests, same run, alternating order, ``--repeats`` each. Writes
``benchmarks/results/model_swap.json``.

    python benchmarks/model_swap.py [--part reload serve] [--rate-scales 1 4] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from common import LLAMA_125M, checkpoint, free_port, serve_deployment, stop_deployment, write_result  # noqa: E402

SMALL = dict(hidden_size=512, intermediate_size=1408, num_hidden_layers=8, num_attention_heads=8,
             num_key_value_heads=4, vocab_size=32000, max_position_embeddings=2048)
SYSTEMS = {
    "seallm": {"scheduling_policy": "seallm", "residency_policy": "seallm", "host_weight_cache": "8GiB"},
    "lru": {"scheduling_policy": "fcfs", "residency_policy": "lru", "host_weight_cache": 0},
    # ablations: one of the two changes at a time
    "fcfs+seallm-residency": {"scheduling_policy": "fcfs", "residency_policy": "seallm", "host_weight_cache": "8GiB"},
    "seallm+lru-residency": {"scheduling_policy": "seallm", "residency_policy": "lru", "host_weight_cache": 0},
}


def reload_part(repeats: int) -> dict:
    import torch

    from seallm.models.config import load_model_config
    from seallm.worker.weights import WeightLoader, copy_model, model_bytes

    path = checkpoint("llama-125m", "llama", **LLAMA_125M)
    cfg = load_model_config(path)

    def wait(loader):
        while True:
            done = loader.poll()
            if done:
                return done[0]
            time.sleep(0.0005)

    disk, cache, clone, copy = [], [], [], []
    nbytes = 0
    for _ in range(repeats):
        loader = WeightLoader({"m": cfg}, torch.device("cpu"), 8 << 30)
        loader.start("m")
        _, model, ev = wait(loader)
        disk.append(ev.seconds)
        nbytes = model_bytes(model)
        loader.release("m", model)
        loader.start("m")
        _, model, ev = wait(loader)
        assert ev.source == "host_cache"
        cache.append(ev.seconds)
        buf = torch.ones(nbytes, dtype=torch.uint8)
        dst = torch.zeros(nbytes, dtype=torch.uint8)  # touched: no page faults in the timing
        t0 = time.perf_counter()
        dst.copy_(buf)
        clone.append(time.perf_counter() - t0)
        del buf, dst
        t0 = time.perf_counter()
        copy_model(model, torch.device("cpu"))
        copy.append(time.perf_counter() - t0)
        loader.close()
    med = {k: statistics.median(v) for k, v in (("disk", disk), ("host_cache", cache), ("memcpy", clone),
                                                 ("model_copy", copy))}
    return dict(weights_bytes=nbytes, seconds=med, runs=dict(disk=disk, host_cache=cache, memcpy=clone,
                                                             model_copy=copy),
                gb_per_s={k: nbytes / v / 1e9 if v > 0 else float("inf") for k, v in med.items()},
                model_copy_vs_memcpy=med["memcpy"] / med["model_copy"])


def start(system: str, models: dict[str, str], args) -> tuple[subprocess.Popen, str, str]:
    cfg = {"models": [{"name": n, "path": p} for n, p in models.items()], "port": free_port(),
           "kv_cache_memory": "256MiB", "max_resident_models": 2, "max_num_batched_tokens": 512,
           "max_waiting_requests": None, "max_waiting_tokens": None, "max_queue_delay_s": None, **SYSTEMS[system]}
    return serve_deployment(cfg, timeout=600)


def metric_sum(base: str, prefix: str) -> float:
    import urllib.request

    text = urllib.request.urlopen(base + "/metrics", timeout=30).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix))


def serve_part(args) -> dict:
    from seallm.bench import run_benchmark
    from seallm.bench.baseline import AloneOverride
    from seallm.bench.config import BenchConfig, CalibrationConfig, ClientConfig
    from seallm.bench.workload import LengthConfig, SyntheticWorkload

    models = {f"m{i}": checkpoint(f"swap-{i}", "llama" if i % 2 == 0 else "qwen2", seed=i, **SMALL)
              for i in range(6)}
    # Served-alone latency: one fit shared by both systems, so SLO attainment compares like with like.
    alone = {"*": AloneOverride(args.alone_base_s, args.alone_prefill_s_per_token, args.alone_decode_s_per_token)}
    out: dict = {"rate_scales": {}}
    for scale in args.rate_scales:
        wl = SyntheticWorkload(models=tuple(models), total_rate=args.total_rate, duration_s=args.duration,
                               alpha=1.0, arrival="gamma", cv=2.0, rate_scale=scale,
                               lengths=LengthConfig(scale=args.length_scale, max_input_len=256, max_output_len=64))
        runs: dict[str, list] = {s: [] for s in args.systems}
        for rep in range(args.repeats):
            order = list(args.systems) if rep % 2 == 0 else list(reversed(args.systems))
            for system in order:
                proc, base, path = start(system, models, args)
                try:
                    t0 = time.time()
                    res = run_benchmark(BenchConfig(workload=wl, client=ClientConfig(base_url=base, progress=False,
                                                                                     timeout_s=args.timeout),
                                                    calibration=CalibrationConfig(enabled=False), alone=alone,
                                                    slo_scales=(5.0, 10.0), seed=args.seed))
                    minutes = (time.time() - t0) / 60
                    loads = metric_sum(base, "seallm:model_loads_total{")
                    o = res.metrics.overall
                    runs[system].append(dict(
                        requests=o.num_requests, completed=o.num_completed, failed=o.num_failed,
                        mean_ttft_s=o.ttft.mean, p99_ttft_s=o.ttft.p99, normalized_latency_s=o.normalized_latency_s,
                        slo_attainment={str(k): v for k, v in (o.slo_attainment or {}).items()},
                        loads=loads, loads_per_minute=loads / minutes if minutes > 0 else 0.0))
                    errors = sorted({r.error for r in res.records if r.error})
                    runs[system][-1]["errors"] = errors[:5]
                    print(system, scale, runs[system][-1], flush=True)
                finally:
                    stop_deployment(proc, path, timeout=60)
        med = {}
        for system, reps in runs.items():
            med[system] = {k: statistics.median(r[k] for r in reps) for k in reps[0]
                           if k not in ("slo_attainment", "errors")}
            med[system]["slo_attainment"] = {k: statistics.median(r["slo_attainment"][k] for r in reps)
                                             for k in reps[0]["slo_attainment"]}
        if "seallm" not in med or "lru" not in med:
            out["rate_scales"][str(scale)] = dict(runs=runs, median=med)
            continue
        s, b = med["seallm"], med["lru"]
        ratios = dict(mean_ttft=b["mean_ttft_s"] / s["mean_ttft_s"] if s["mean_ttft_s"] else None,
                      p99_ttft=b["p99_ttft_s"] / s["p99_ttft_s"] if s["p99_ttft_s"] else None,
                      normalized_latency=b["normalized_latency_s"] / s["normalized_latency_s"]
                      if s["normalized_latency_s"] else None,
                      slo_attainment={k: (s["slo_attainment"][k] / b["slo_attainment"][k]
                                          if b["slo_attainment"][k] else None) for k in s["slo_attainment"]})
        out["rate_scales"][str(scale)] = dict(runs=runs, median=med, lru_over_seallm=ratios)
    out["served_alone"] = dict(ttft_base_s=args.alone_base_s, ttft_per_token_s=args.alone_prefill_s_per_token,
                               tpot_s=args.alone_decode_s_per_token)
    out["workload"] = dict(models=6, alpha=1.0, arrival="gamma", cv=2.0, total_rate=args.total_rate,
                           duration_s=args.duration, length_scale=args.length_scale, max_resident_models=2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", nargs="+", default=["reload", "serve"], choices=["reload", "serve"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rate-scales", type=float, nargs="+", default=[1.0, 4.0])
    ap.add_argument("--total-rate", type=float, default=0.5, help="req/s over the six models at scale 1")
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--length-scale", type=float, default=0.1)
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--alone-base-s", type=float, default=0.05)
    ap.add_argument("--alone-prefill-s-per-token", type=float, default=2e-4)
    ap.add_argument("--alone-decode-s-per-token", type=float, default=0.02)
    ap.add_argument("--systems", nargs="+", default=["seallm", "lru"], choices=list(SYSTEMS))
    ap.add_argument("--name", default="model_swap")
    args = ap.parse_args()
    result: dict = {}
    if "reload" in args.part:
        result["reload"] = reload_part(args.repeats)
        print(result["reload"], flush=True)
    if "serve" in args.part:
        result["serve"] = serve_part(args)
    print(write_result(args.name, result))


if __name__ == "__main__":
    main()
