"""Serving capacity under per-stage SLOs: SLOs-Serve against Sarathi-Serve, vLLM-style FCFS and
seallm's own policy, in the simulator with SLOs-Serve's published performance models.

Reference: ``shared/reference/slo-scheduling.md`` §1.3 (performance models), §2.1 (scenarios),
§2.4 (metrics). Every system runs the replica ``seallm serve`` builds (same scheduler,
unified KV bookkeeping and engine loop; ``seallm.sim``) with step times from the max-affine
model of the scenario's GPU deployment, which the ``slos-serve`` and ``sarathi`` policies also
plan with (an exact cost model).

Capacity = the highest request rate at which at least 90 % of requests meet their SLO and the
last request finishes within 20 s of the last deadline (the reference's backlog guard),
found by doubling from 0.5 req/s and bisection (0.05-32 req/s, to 4 %); a
``slos-serve`` request served best-effort counts as a miss even when it finishes in time
(the reference's rule). Per-GPU capacity divides by the GPUs of the deployment.

Scenarios (lengths from the traces in ``shared/traces``; our choices where the reference has
no data are marked *):

* ``chatbot``: Azure conversation trace, 900-1200 s (the whole window at every rate, its
  arrivals rescaled to the rate; ``--duration`` applies to the other scenarios); OPT-13B
  on 2 GPUs (TP2); class chatbot (5x TTFT, 100 ms TPOT).
* ``coding``: Azure code trace, 1786-2086 s; OPT-13B TP2; coding (5x, 50 ms).
* ``summarization``: arXiv summarization lengths (prompts capped at 4096*), Poisson; OPT-13B
  TP2; summarization (3x, 100 ms).
* ``mixed``*: the three above in equal parts, each request with its own class; Poisson.
* ``tool_calling``*: chains of 1-4 rounds (geometric), ShareGPT first prompts, each round's
  prompt the previous context plus 64-256 tool-result tokens, intermediate outputs of 16-64
  tokens, a 0.2-1 s tool delay between rounds; ToolLLaMA-2-7B on 1 GPU; intermediate rounds
  tool_calling (3x, 50 ms), the final round tool_calling_final (3x, 100 ms). Rate = chains/s.
* ``reasoning``*: ShareGPT prompts, thinking lengths log-normal (median 600, capped 3000)
  before a ShareGPT-length answer; DeepSeek-R1-Distill-Qwen-7B on 1 GPU; reasoning (3x,
  50 ms thinking, 100 ms answer).

Also a burst test (chatbot lengths at 2 and 4 req/s for ``--duration`` s, Poisson arrivals
against compound-Poisson ones with geometric burst sizes of mean 5, §1.8: attainment of every
system) and a replica-scaling test (chatbot lengths, Poisson, on 1, 2 and 4 replicas: capacity
per replica with routing ``slo`` (try-then-forward) against ``round_robin``, all
``slos-serve``).

    python benchmarks/slo_capacity.py [--duration 120] [--jobs 2] [--parts capacity burst scaling]

Writes ``benchmarks/results/slo_capacity.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))

from seallm.bench.slo_metrics import slo_attainment  # noqa: E402
from seallm.bench.traces import load_azure_trace, load_length_distribution  # noqa: E402
from seallm.bench.workload import BenchRequest  # noqa: E402
from seallm.cost import MaxAffineCostModel  # noqa: E402
from seallm.kv import KVSpec  # noqa: E402
from seallm.sched import SchedulerConfig, make_policy  # noqa: E402
from seallm.sched.slo import SLO_CLASSES, token_offset_s, ttft_target_s, zero_load_prefill_s  # noqa: E402
from seallm.sim.device import SimModel, simulate_device, simulate_replicas  # noqa: E402

SYSTEMS = ("slos-serve", "sarathi", "fcfs", "seallm")
SCENARIOS = ("chatbot", "coding", "summarization", "mixed", "tool_calling", "reasoning")

# (cost pieces (per-token s, per-context-token s, base s), KV spec, KV pages of 16 tokens, GPUs)
DEPLOYMENTS = {
    # OPT-13B TP2 on 2 x A100-80GB: 7.21e-5 N + 31.7 ms; 40 layers x 40 heads x 128, fp16;
    # (160 - 26) GB x 0.9 of KV = ~147k tokens.
    "opt-13b-tp2": (((7.21e-5, 0.0, 0.0317),), KVSpec(40, 40, 128, 2), 9000, 2),
    # ToolLLaMA-2-7B on 1 A100: 6.57e-5 N + 27.5 ms; Llama-2-7B KV; (80 - 13.5) x 0.9 GB.
    "toolllama-7b": (((6.57e-5, 0.0, 0.0275),), KVSpec(32, 32, 128, 2), 7000, 1),
    # DeepSeek-R1-Distill-Qwen-7B on 1 A100: max(6.04e-5 N + 14 ms, 30 ms); 28 x 4 x 128 KV.
    "r1-qwen-7b": (((6.04e-5, 0.0, 0.014), (0.0, 0.0, 0.030)), KVSpec(28, 4, 128, 2), 20000, 1),
}
SCENARIO_DEPLOYMENT = {"chatbot": "opt-13b-tp2", "coding": "opt-13b-tp2", "summarization": "opt-13b-tp2",
                       "mixed": "opt-13b-tp2", "tool_calling": "toolllama-7b", "reasoning": "r1-qwen-7b",
                       "chatbot_bursty": "opt-13b-tp2", "chatbot_poisson": "opt-13b-tp2"}
SCHED = SchedulerConfig(max_num_batched_tokens=8192, max_num_seqs=512)


# ---- workloads --------------------------------------------------------------------------------
def _trace_window(name: str, start: float, end: float):
    tr = load_azure_trace(name)
    sel = (tr.arrival_s >= start) & (tr.arrival_s < end)
    return tr.arrival_s[sel] - start, tr.input_lens[sel], tr.output_lens[sel]


def _poisson(rate: float, duration: float, rng) -> np.ndarray:
    n = rng.poisson(rate * duration * 1.2) + 10
    t = np.cumsum(rng.exponential(1.0 / rate, size=n))
    return t[t < duration]


def _bursty(rate: float, duration: float, rng, mean_burst: float = 5.0) -> np.ndarray:
    """Compound Poisson: burst events at ``rate / mean_burst``, Geometric sizes of mean
    ``mean_burst`` (SLOs-Serve's generator, §1.8)."""
    ev = _poisson(rate / mean_burst, duration, rng)
    sizes = rng.geometric(1.0 / mean_burst, size=len(ev))
    return np.repeat(ev, sizes)


def _cap(x, lo, hi):
    return int(min(max(int(x), lo), hi))


def workload(scenario: str, rate: float, duration: float, seed: int) -> list[BenchRequest]:
    """The requests of ``scenario`` at ``rate`` req/s (chains/s for tool calling) over
    ``duration`` s (module docstring)."""
    rng = np.random.default_rng(seed)
    m = "m"
    if scenario in ("chatbot", "coding"):
        t, ins, outs = _trace_window("conv" if scenario == "chatbot" else "code",
                                     *((900, 1200) if scenario == "chatbot" else (1786, 2086)))
        t = t * (len(t) / 300.0) / rate  # the whole window, its arrivals rescaled to the rate
        slo = SLO_CLASSES[scenario]
        return [BenchRequest(m, float(a), _cap(i, 1, 8192), _cap(o, 1, 2048), slo) for a, i, o in zip(t, ins, outs)]
    if scenario in ("chatbot_bursty", "chatbot_poisson"):
        _, ins, outs = _trace_window("conv", 900, 1200)
        t = _bursty(rate, duration, rng) if scenario == "chatbot_bursty" else _poisson(rate, duration, rng)
        idx = rng.integers(0, len(ins), size=len(t))
        return [BenchRequest(m, float(a), _cap(ins[k], 1, 8192), _cap(outs[k], 1, 2048), SLO_CLASSES["chatbot"])
                for a, k in zip(t, idx)]
    if scenario == "summarization":
        d = load_length_distribution("arxiv")
        t = _poisson(rate, duration, rng)
        ins, outs = d.sample(len(t), rng)
        return [BenchRequest(m, float(a), _cap(i, 1, 4096), _cap(o, 1, 1024), SLO_CLASSES["summarization"])
                for a, i, o in zip(t, ins, outs)]
    if scenario == "mixed":
        t = _poisson(rate, duration, rng)
        kinds = rng.integers(0, 3, size=len(t))
        conv, code = _trace_window("conv", 900, 1200), _trace_window("code", 1786, 2086)
        arxiv = load_length_distribution("arxiv")
        out = []
        for a, k in zip(t, kinds):
            if k == 2:
                i, o = arxiv.sample(1, rng)
                out.append(BenchRequest(m, float(a), _cap(i[0], 1, 4096), _cap(o[0], 1, 1024),
                                        SLO_CLASSES["summarization"]))
            else:
                _, ins, outs = conv if k == 0 else code
                j = rng.integers(0, len(ins))
                out.append(BenchRequest(m, float(a), _cap(ins[j], 1, 8192), _cap(outs[j], 1, 2048),
                                        SLO_CLASSES["chatbot" if k == 0 else "coding"]))
        return out
    if scenario == "tool_calling":
        share = load_length_distribution("sharegpt")
        out: list[BenchRequest] = []
        for a in _poisson(rate, duration, rng):
            rounds = min(int(rng.geometric(0.5)), 4)
            i0, o_final = share.sample(1, rng)
            ctx = _cap(i0[0], 16, 1024)
            prev = None
            for k in range(rounds):
                final = k == rounds - 1
                o = _cap(o_final[0], 1, 512) if final else int(rng.integers(16, 65))
                slo = SLO_CLASSES["tool_calling_final" if final else "tool_calling"]
                out.append(BenchRequest(m, float(a), ctx, o, slo, after=prev,
                                        tool_delay_s=float(rng.uniform(0.2, 1.0)) if prev is not None else 0.0))
                prev = len(out) - 1
                ctx += o + int(rng.integers(64, 257))
        return out
    if scenario == "reasoning":
        share = load_length_distribution("sharegpt")
        t = _poisson(rate, duration, rng)
        ins, outs = share.sample(len(t), rng)
        think = np.minimum(np.exp(rng.normal(np.log(600), 0.6, size=len(t))), 3000).astype(int)
        base = SLO_CLASSES["reasoning"]
        out = []
        for a, i, o, g in zip(t, ins, outs, think):
            slo = type(base)(ttft_slowdown=base.ttft_slowdown, tpot=base.tpot, tpot_thinking=base.tpot_thinking,
                             thinking_tokens=int(g))
            out.append(BenchRequest(m, float(a), _cap(i, 1, 1024), int(g) + _cap(o, 1, 512), slo))
        return out
    raise ValueError(f"unknown scenario {scenario!r}")


# ---- one run ------------------------------------------------------------------------------------
def _policy(system: str, pieces):
    if system in ("slos-serve", "sarathi"):
        return make_policy(system, {"cost_models": {"m": [list(p) for p in pieces]}})
    return make_policy(system, {})


def run_once(scenario: str, system: str, rate: float, duration: float, seed: int = 0,
             replicas: int = 0, routing: str = "slo") -> dict:
    """Attainment of one system at one rate (``replicas`` > 0: that many replicas behind the
    router, each a ``slos-serve`` replica)."""
    pieces, kv, pages, gpus = DEPLOYMENTS[SCENARIO_DEPLOYMENT[scenario]]
    cm = MaxAffineCostModel(pieces)
    model = SimModel("m", kv, cm)
    reqs = workload(scenario, rate * max(1, replicas), duration, seed)
    page = 16 * kv.bytes_per_token
    t0 = time.perf_counter()
    if replicas:
        res = simulate_replicas(reqs, [model], lambda: _policy(system, pieces), replicas, pages, page, SCHED, routing)
        plan_s = None
    else:
        pol = _policy(system, pieces)
        res = simulate_device(reqs, [model], pol, pages, page, SCHED)
        plan_s = getattr(pol, "plan_seconds", None)
        plans = getattr(pol, "num_plans", None)
    att = slo_attainment(res.records, [r.slo for r in reqs], {"m": cm})
    # tail: last finish - last deadline (a request's deadline: its TTFT target plus the
    # cumulative TPOT targets of its tokens), the reference's backlog guard
    last = max(r.sent_s + ttft_target_s(q.slo, zero_load_prefill_s(cm, q.input_len))
               + token_offset_s(q.slo, q.output_len) for r, q in zip(res.records, reqs))
    out = {"rate": rate, "requests": len(reqs), "attainment": att.attainment, "guaranteed": att.guaranteed,
           "guaranteed_met": att.guaranteed_met, "best_effort": att.best_effort,
           "tail_s": res.makespan_s - last, "wall_s": time.perf_counter() - t0}
    if plan_s is not None and plans:
        out["plan_ms_mean"] = 1e3 * plan_s / plans
    return out


def _good(r: dict) -> bool:
    return r["attainment"] >= 0.9 and r["tail_s"] < 20.0


def capacity(scenario: str, system: str, duration: float, seed: int = 0, replicas: int = 0,
             routing: str = "slo", lo: float = 0.05, hi: float = 32.0) -> dict:
    """Highest rate (req/s; per replica with ``replicas``) meeting the capacity criterion:
    doubling from 0.5 req/s to the first rate that fails (so no run is far past capacity),
    then bisection; with every run made."""
    runs = []

    def probe(rate):
        r = run_once(scenario, system, rate, duration, seed, replicas, routing)
        runs.append(r)
        return _good(r)

    rate = 0.5
    if not probe(rate):
        hi = rate
        if not probe(lo):
            return {"capacity": 0.0, "runs": runs}
    else:
        while rate < hi and probe(min(2 * rate, hi)):
            rate = min(2 * rate, hi)
        if rate >= hi:
            return {"capacity": hi, "runs": runs}
        lo, hi = rate, min(2 * rate, hi)
    while hi - lo > max(0.1, 0.04 * lo):
        mid = (lo + hi) / 2
        if probe(mid):
            lo = mid
        else:
            hi = mid
    return {"capacity": lo, "runs": runs}


BURST_RATES = (2.0, 4.0)


def _task(args):
    kind, scenario, system, duration, extra = args
    t0 = time.perf_counter()
    if kind == "burst":  # attainment at fixed mean rates, Poisson against bursty arrivals
        r = {name: [run_once(sc, system, rate, duration) for rate in BURST_RATES]
             for name, sc in (("poisson", "chatbot_poisson"), ("bursty", "chatbot_bursty"))}
        summary = " ".join(f"{k} {[round(x['attainment'], 3) for x in v]}" for k, v in r.items())
    else:
        r = capacity(scenario, system, duration, **extra)
        summary = f"capacity {r['capacity']:.2f}"
    r["wall_s"] = time.perf_counter() - t0
    print(f"[{kind}] {scenario:15s} {system:11s} {json.dumps(extra)} {summary} ({r['wall_s']:.0f} s)", flush=True)
    return kind, scenario, system, extra, r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=120.0, help="seconds of arrivals per run")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--parts", nargs="*", default=["capacity", "burst", "scaling"],
                    help="which parts to run; the others are kept from an existing result file")
    ap.add_argument("--scenarios", nargs="*", default=list(SCENARIOS))
    ap.add_argument("--systems", nargs="*", default=list(SYSTEMS))
    ap.add_argument("--replicas", nargs="*", type=int, default=[1, 2, 4])
    ap.add_argument("--out", default="benchmarks/results/slo_capacity.json")
    args = ap.parse_args()
    tasks = []
    if "capacity" in args.parts:
        tasks += [("capacity", s, p, args.duration, {}) for s in args.scenarios for p in args.systems]
    if "burst" in args.parts:
        tasks += [("burst", "chatbot", p, args.duration, {}) for p in args.systems]
    if "scaling" in args.parts:
        tasks += [("scaling", "chatbot_poisson", "slos-serve", args.duration, {"replicas": n, "routing": rt})
                  for n in args.replicas for rt in ("slo", "round_robin")]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(args.jobs) as pool:
        results = list(pool.map(_task, tasks))
    old = {}
    if os.path.exists(args.out):
        with open(args.out) as f:
            old = json.load(f)
    table: dict = old.get("capacity", {}) if "capacity" not in args.parts else {}
    burst: dict = old.get("burst", {}) if "burst" not in args.parts else {}
    scaling: dict = old.get("replica_scaling", {}) if "scaling" not in args.parts else {}
    for kind, scenario, system, extra, r in results:
        if kind == "capacity":
            gpus = DEPLOYMENTS[SCENARIO_DEPLOYMENT[scenario]][3]
            table.setdefault(scenario, {})[system] = {"capacity_rps": r["capacity"],
                                                     "per_gpu_rps": r["capacity"] / gpus, "runs": r["runs"]}
        elif kind == "burst":
            burst[system] = {"rates": list(BURST_RATES), **r}
        else:
            scaling.setdefault(extra["routing"], {})[str(extra["replicas"])] = {
                "capacity_rps_per_replica": r["capacity"], "runs": r["runs"]}
    ratios = {}
    for base in ("fcfs", "sarathi", "seallm"):
        per = {s: table[s]["slos-serve"]["capacity_rps"] / table[s][base]["capacity_rps"]
               for s in table if "slos-serve" in table[s] and table[s].get(base, {}).get("capacity_rps", 0) > 0}
        if per:
            ratios[f"slos-serve/{base}"] = {"mean": statistics.mean(per.values()), "min": min(per.values()),
                                            "max": max(per.values()), "per_scenario": per}
    result = {"benchmark": "slo_capacity", "duration_s": args.duration, "criterion":
              "attainment >= 0.9 and last finish within 20 s of the last deadline",
              "capacity": table, "ratios": ratios, "burst": burst, "replica_scaling": scaling,
              "wall_s": time.perf_counter() - t0}
    from common import write_result

    path = write_result(os.path.splitext(os.path.basename(args.out))[0], result, os.path.dirname(args.out))
    print("wrote", path)
    for s, row in table.items():
        print(f"{s:15s} " + "  ".join(f"{p} {v['capacity_rps']:.2f}" for p, v in row.items()))
    print(json.dumps(ratios, indent=1))


if __name__ == "__main__":
    main()
