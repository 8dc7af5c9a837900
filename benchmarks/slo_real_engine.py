"""SLOs-Serve on the real engine on this CPU: do guaranteed requests meet their SLO?

The planner is only as good as its step-time model. This benchmark profiles a random ~14M
Llama with ``seallm profile`` (a max-affine fit on this machine), serves it with
``scheduling_policy: slos-serve`` planning with that fit, and replays Poisson traffic with
the ``chatbot`` class (5x zero-load TTFT, 100 ms TPOT) through the load client at several
rates, below and past capacity; ``fcfs`` on the same requests in the same run, alternating.
Target (issue 12): at least 99 % of guaranteed requests meet their SLO. Attainment counts
best-effort requests as misses (the reference's rule).

    python benchmarks/slo_real_engine.py [--rates 1 2 4 8] [--duration 60]

Writes ``benchmarks/results/slo_real_engine.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))

from common import checkpoint, free_port, serve_deployment, stop_deployment, write_result  # noqa: E402

from seallm.bench.client import ClientConfig, replay_sync  # noqa: E402
from seallm.bench.prompts import TokenIdPrompts  # noqa: E402
from seallm.bench.slo_metrics import slo_attainment  # noqa: E402
from seallm.bench.workload import BenchRequest  # noqa: E402
from seallm.cost import MaxAffineCostModel  # noqa: E402
from seallm.sched.slo import SLO_CLASSES  # noqa: E402


# ~14M parameters (4 layers, hidden 256): iterations of a few ms on 2 cores, so that the
# chatbot class's 100 ms TPOT leaves room for batching, as a 7-13B model has on a GPU.
LLAMA_SMALL = dict(hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=4,
                   num_key_value_heads=2, vocab_size=32000, max_position_embeddings=2048)


def _profile(path: str) -> MaxAffineCostModel:
    out = os.path.join(tempfile.mkdtemp(), "profile.json")
    subprocess.run([sys.executable, "-m", "seallm.cli", "profile", "--model", f"m={path}", "--output", out],
                   check=True, stdout=subprocess.DEVNULL)
    with open(out) as f:
        return MaxAffineCostModel.from_json(json.dumps(json.load(f)["cost_model"]))


def _workload(rate: float, duration: float, seed: int) -> list[BenchRequest]:
    rng = random.Random(seed)
    t, out = 0.0, []
    while True:
        t += rng.expovariate(rate)
        if t > duration:
            return out
        out.append(BenchRequest("m", t, rng.randint(32, 384), rng.randint(16, 96), SLO_CLASSES["chatbot"]))


def _run(path: str, policy: str, cm: MaxAffineCostModel, reqs: list[BenchRequest]) -> dict:
    cfg = {"models": [{"name": "m", "path": path}], "kv_cache_memory": "512MiB", "port": free_port(),
           "scheduling_policy": policy, "max_num_batched_tokens": 512}
    if policy == "slos-serve":
        cfg["policy_options"] = {"cost_models": {"m": [list(p) for p in cm.pieces]}}
    proc, base, cfg_path = serve_deployment(cfg)
    try:
        recs = replay_sync(reqs, TokenIdPrompts(10, 500, seed=0),
                           ClientConfig(base_url=base, progress=False, request_timeout_s=300))
    finally:
        stop_deployment(proc, cfg_path)
    att = slo_attainment(recs, [r.slo for r in reqs], {"m": cm})
    return {"requests": att.num_requests, "attainment": att.attainment, "met": att.met,
            "guaranteed": att.guaranteed, "guaranteed_met": att.guaranteed_met, "best_effort": att.best_effort,
            "errors": att.refused, "guaranteed_attainment": att.guaranteed_attainment}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", nargs="*", type=float, default=[2.0, 8.0, 16.0, 32.0])
    ap.add_argument("--duration", type=float, default=60.0)
    args = ap.parse_args()
    path = checkpoint("llama-small", "llama", **LLAMA_SMALL)
    cm = _profile(path)
    print("profiled step-time model:", cm.pieces, flush=True)
    runs = []
    for k, rate in enumerate(args.rates):
        reqs = _workload(rate, args.duration, seed=k)
        order = ("slos-serve", "fcfs") if k % 2 == 0 else ("fcfs", "slos-serve")
        row = {"rate": rate}
        for policy in order:
            row[policy] = _run(path, policy, cm, reqs)
            print(rate, policy, row[policy], flush=True)
        runs.append(row)
    g = sum(r["slos-serve"]["guaranteed"] for r in runs)
    gm = sum(r["slos-serve"]["guaranteed_met"] for r in runs)
    result = {"benchmark": "slo_real_engine", "model": "random Llama ~14M (4 layers, hidden 256)", "cost_model": [list(p) for p in cm.pieces],
              "slo_class": "chatbot", "duration_s": args.duration, "runs": runs,
              "guaranteed_total": g, "guaranteed_met_total": gm,
              "guaranteed_attainment": gm / g if g else None, "target": 0.99}
    print("wrote", write_result("slo_real_engine", result))
    print(f"guaranteed requests meeting their SLO: {gm}/{g}")


if __name__ == "__main__":
    main()
