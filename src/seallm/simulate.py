"""``seallm simulate``: plan a deployment on a simulated device with the real scheduler code.

Cluster mode (``--cluster FILE`` or ``--cluster default``) simulates a whole cluster
instead: every system of ``--systems`` (seallm, vllm, alpaserve, muxserve) places the
cluster file's services with its own algorithm and serves the same requests; the table
gives normalized latency, P50/P99 latency, TTFT/TPOT tails and SLO attainment per system,
with the ratios to seallm (see ``seallm place`` for the placement alone).

The device runs the same ``Scheduler`` and policy as ``seallm serve``; only the forward
passes are replaced by a cost model: a profile written by ``seallm profile`` for a model
(max-affine fit of measured step times), or the one ``seallm serve`` refits online and keeps
in the deployment's ``profiles_path``, else the roofline model of ``--device``. The
workload options and the metrics are those of ``seallm bench``.
"""

from __future__ import annotations

import argparse
import json
import sys


def add_simulate_parser(sub: argparse._SubParsersAction) -> None:
    from seallm.bench.cli import add_workload_args

    p = sub.add_parser("simulate", help="simulate a deployment under a trace or synthetic workload",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = p.add_argument_group("deployment (as for seallm serve; no weights are loaded)")
    d.add_argument("--model", action="append", metavar="NAME=PATH", help="a Hugging Face checkpoint (repeatable)")
    d.add_argument("--config", help="YAML deployment file")
    d.add_argument("--kv-cache-memory", default=None, help="KV pool size, e.g. 2GiB (default: the deployment's)")
    d.add_argument("--scheduling-policy", nargs="+", default=None, metavar="POLICY",
                   help="fcfs, seallm, slos-serve and/or sarathi; several policies are compared on the same requests")
    d.add_argument("--max-num-batched-tokens", type=int, default=None, help="per-iteration token budget")
    d.add_argument("--max-num-seqs", type=int, default=None, help="most sequences per iteration")
    d.add_argument("--preemption-mode", default=None, choices=("recompute", "swap"),
                   help="what a preempted request loses (default: the deployment's)")
    d.add_argument("--swap-space", default=None, help="host memory for swapped KV pages (default 4GiB)")
    d.add_argument("--max-resident-models", type=int, default=None,
                   help="most models resident at once; the others load on demand (default: the deployment's)")
    d.add_argument("--weights-memory", default=None, help="device memory for resident weights, e.g. 40GiB")
    d.add_argument("--residency-policy", default=None, choices=("seallm", "lru"),
                   help="which model loads next and which one leaves (default: the deployment's)")
    d.add_argument("--disk-bandwidth", type=float, default=2e9, metavar="BYTES_PER_S",
                   help="checkpoint read rate of a cold load (default 2e9); reloads from the host weight cache "
                        "run at the device's host link bandwidth")
    c = p.add_argument_group("cost model")
    c.add_argument("--cost-profile", action="append", metavar="NAME=FILE",
                   help="step-time model of a model: a `seallm profile` output or a serving deployment's "
                        "profiles_path file (repeatable; the deployment's profiles_path is read by default)")
    c.add_argument("--device", default="cpu",
                   help="device for models without a profile (roofline) and for swap copies (host link): "
                        "a100-80gb, h100-sxm, h200 or cpu (this CPU, micro-benchmarked) (default cpu)")
    k = p.add_argument_group("cluster mode")
    k.add_argument("--cluster", default=None, metavar="FILE",
                   help="a cluster file (YAML: devices, services, workload), or 'default' (32 H100s, 19 LLaMA "
                        "models, Azure traces); the workload options below then come from the file, except "
                        "--duration, --rate-scale, --seed and --slo-scales")
    k.add_argument("--systems", nargs="+", default=None, metavar="SYSTEM",
                   help="systems to compare: seallm vllm alpaserve muxserve (default: all), each optionally "
                        "NAME@none|fixed|adaptive for its replacement mode (e.g. seallm@adaptive alpaserve@fixed)")
    k.add_argument("--replacement", default=None, choices=("none", "fixed", "adaptive"),
                   help="re-place while serving, for systems without @MODE: none, fixed (every "
                        "--replacement-interval s, AlpaServe's Clockwork++) or adaptive (SeaLLM's gain-vs-cost "
                        "rule) (default: the cluster file's, none)")
    k.add_argument("--replacement-interval", type=float, default=None, metavar="S",
                   help="fixed replacement's interval in seconds (default: the cluster file's, 60)")
    k.add_argument("--sweep-rate-scales", nargs="+", type=float, default=None, metavar="X",
                   help="also run every system at these rate scales (table per scale; latency-vs-rate plot)")
    k.add_argument("--plot-dir", default=None, metavar="DIR", help="write PNG plots there")
    k.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    k.add_argument("--no-fast-forward", action="store_true",
                   help="simulate every iteration step by step (slower; results are identical: steady decode "
                        "iterations are fast-forwarded exactly by default)")
    add_workload_args(p, required=False)
    m = p.add_argument_group("metrics and output")
    m.add_argument("--slo-scales", nargs="+", type=float, default=None, metavar="SCALE",
                   help="SLO scales: E2E <= scale x served-alone latency on the simulated device "
                        "(default 5 10; cluster mode: the file's, 2 5 10 by default)")
    m.add_argument("--output", default=None, metavar="FILE", help="write the results as JSON")
    p.set_defaults(func=run_simulate)


def load_cost_profile(path: str, model: str | None = None):
    """The cost model of ``model`` in a JSON file: a ``seallm profile`` output, a bare
    max-affine model, or the service profiles a ``seallm serve`` deployment keeps in its
    ``profiles_path`` (one entry per model, refit from the iterations it served; the
    engine loop's measured time per iteration beyond the forward pass, ``iteration_overhead_s``,
    is added to every iteration).

    Raises:
        ValueError: unreadable file, or no cost model (for ``model``) in it.
    """
    from seallm.cost import MaxAffineCostModel

    try:
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
        if model is not None and isinstance(d.get(model), dict):
            d = d[model]
        overhead = float(d.get("iteration_overhead_s") or 0.0)  # a served profile's loop time per iteration
        cm = MaxAffineCostModel.from_json(json.dumps(d.get("cost_model", d)))
        if overhead > 0:
            cm = MaxAffineCostModel(tuple((a, c, b + overhead) for a, c, b in cm.pieces))
        return cm
    except (OSError, json.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: not a seallm cost profile{f' for {model!r}' if model else ''} ({e})") from None


def _ingest_delays(path: str | None) -> dict[str, float]:
    """Per model, the measured delay from the front end's stamp to the engine's queue (s)
    in a deployment's ``profiles_path`` (empty if none)."""
    import os

    if not path or not os.path.exists(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
    except (OSError, json.JSONDecodeError):
        return {}
    if not isinstance(d, dict):
        return {}
    return {m: float(v["ingest_delay_s"]) for m, v in d.items()
            if isinstance(v, dict) and isinstance(v.get("ingest_delay_s"), (int, float))}


def _served_profiles(path: str | None) -> dict:
    """Models with a refit cost model in a deployment's ``profiles_path`` (empty if none)."""
    import os

    if not path or not os.path.exists(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
    except (OSError, json.JSONDecodeError):
        return {}
    return {m: path for m, v in d.items() if isinstance(v, dict) and v.get("cost_model")} if isinstance(d, dict) else {}


def sim_config_from_args(args: argparse.Namespace):
    """(deployment, list of SimConfig, one per policy) from the command line. Raises ``ValueError``."""
    from seallm.cli import _parse_models
    from seallm.cost import DEVICES, RooflineCostModel, measure_local_cpu
    from seallm.deploy import deployment_from, replica_spec
    from seallm.kv import parse_bytes
    from seallm.models.config import load_model_config
    from seallm.profiling import model_shape
    from seallm.sched import SchedulerConfig
    from seallm.sim import SimModel
    from seallm.sim.runner import SimConfig

    dep = deployment_from(_parse_models(args.model or []), args.config)
    if dep is None:
        raise ValueError("give --model NAME=PATH (repeatable) or --config FILE")
    dep = dep.with_overrides(kv_cache_memory=args.kv_cache_memory, max_num_batched_tokens=args.max_num_batched_tokens,
                             max_num_seqs=args.max_num_seqs, preemption_mode=args.preemption_mode,
                             swap_space=args.swap_space, max_resident_models=args.max_resident_models,
                             weights_memory=args.weights_memory, residency_policy=args.residency_policy)
    if not args.disk_bandwidth > 0:
        raise ValueError(f"--disk-bandwidth must be > 0, got {args.disk_bandwidth}")
    given = dict(_parse_models(args.cost_profile or []))
    unknown = sorted(set(given) - {m.name for m in dep.models})
    if unknown:
        raise ValueError(f"--cost-profile for model(s) {unknown} that the deployment does not serve")
    profiles = _served_profiles(dep.profiles_path) | given
    configs = {m.name: load_model_config(m.path, m.dtype) for m in dep.models}
    if args.device == "cpu":
        device = measure_local_cpu()
    elif args.device in DEVICES:
        device = DEVICES[args.device]
    else:
        raise ValueError(f"unknown --device {args.device!r}; known: cpu, {', '.join(DEVICES)}")
    sims = []
    for name, cfg in configs.items():
        cost = load_cost_profile(profiles[name], name) if name in profiles else RooflineCostModel(model_shape(cfg), device)
        sims.append(SimModel(name, cfg.kv_spec, cost, cfg.weights_bytes, cfg.max_model_len, cfg.vocab_size,
                             tuple(cfg.eos_token_ids), name in {m.name for m in dep.models if m.pinned}))
    if dep.kv_cache_memory is None:
        raise ValueError("give --kv-cache-memory (the simulator cannot read free GPU memory)")
    spec = replica_spec(dep, configs)  # the server's pool sizing rules
    page = spec.page_bytes
    pages = spec.kv_cache_bytes // page
    if pages < 1:
        raise ValueError(f"kv_cache_memory={dep.kv_cache_memory!r} is smaller than one page ({page} bytes)")
    policies = args.scheduling_policy or [dep.scheduling_policy]
    out = []
    for pol in policies:
        opts = dep.policy_options if pol == dep.scheduling_policy else {}
        out.append(SimConfig(models=tuple(sims), kv_pages=pages, page_size_bytes=page, scheduling_policy=pol,
                             policy_options=dict(opts),
                             scheduler=SchedulerConfig(dep.max_num_batched_tokens, dep.max_num_seqs,
                                                       dep.preemption_mode),
                             swap_pages=parse_bytes(dep.swap_space) // page if dep.preemption_mode == "swap" else 0,
                             swap_bandwidth=device.host_link_bandwidth, slo_scales=tuple(args.slo_scales), seed=args.seed,
                             max_resident_models=spec.max_resident_models,
                             weights_memory_bytes=spec.weights_memory_bytes, residency_policy=spec.residency_policy,
                             residency_preempt_after=spec.residency_preempt_after,
                             disk_bandwidth=args.disk_bandwidth, host_cache_bandwidth=device.host_link_bandwidth,
                             fast_forward=not args.no_fast_forward, profiles_path=dep.profiles_path,
                             ingest_delay_s=_ingest_delays(dep.profiles_path)))
    return dep, out


def run_cluster_simulate(args: argparse.Namespace) -> int:
    """``seallm simulate --cluster``: every system on the same requests. Returns 0, or 2 on bad input."""
    from tqdm import tqdm

    from seallm.cluster.config import load_cluster
    from seallm.sim.compare import compare_systems, format_comparison, plot_comparison

    if args.trace or args.models:
        print("error: --cluster takes its workload from the cluster file (not --trace / --models)", file=sys.stderr)
        return 2
    systems = args.systems or ["seallm", "vllm", "alpaserve", "muxserve"]
    try:
        cfg = load_cluster(args.cluster).with_overrides(args.duration, args.rate_scale,
                                                        tuple(args.slo_scales) if args.slo_scales else None,
                                                        args.replacement, args.replacement_interval)
        scales = [cfg.workload.rate_scale] + [x for x in args.sweep_rate_scales or [] if x != cfg.workload.rate_scale]
        bar = tqdm(total=len(scales) * len(systems), desc="simulating", unit="system", disable=args.no_progress,
                   file=sys.stderr)
        runs = {}
        for x in scales:
            c = cfg.with_overrides(rate_scale=x)
            runs[x] = compare_systems(c, systems, args.seed, on_done=lambda name: bar.update(1),
                                      fast_forward=not args.no_fast_forward)
        bar.close()
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    c = cfg.cluster
    out = {"cluster": {"device": c.device, "num_nodes": c.num_nodes, "devices_per_node": c.devices_per_node,
                       "services": {s.name: s.arch.name for s in cfg.services}},
           "slo_scales": list(cfg.slo_scales), "rate_scale": cfg.workload.rate_scale, "sweep": {}}
    for x in scales:
        res = runs[x]
        n = len(next(iter(res.values())).run.records)
        print(f"\n== rate scale {x:g}: {n} requests over {cfg.with_overrides(rate_scale=x).workload.replay_s:.0f} s, "
              f"{c.num_nodes} x {c.devices_per_node} {c.device}")
        print(format_comparison(res, cfg.slo_scales))
        summ = {name: r.summary() for name, r in res.items()}
        out["sweep"][str(x)] = summ
        if x == cfg.workload.rate_scale:
            out["systems"] = summ
    if args.plot_dir:
        sweep = {x: {n: r.summary() for n, r in runs[x].items()} for x in scales} if len(scales) > 1 else None
        for path in plot_comparison(runs[scales[0]], cfg.slo_scales, args.plot_dir, sweep):
            print(f"wrote {path}")
    if args.output:
        with open(args.output, "w") as f:
            json.dump(out, f, indent=2)
        print(f"wrote {args.output}")
    return 0


def run_simulate(args: argparse.Namespace) -> int:
    """Run ``seallm simulate``: one table per policy, JSON on request. Returns 0, or 2 on bad input."""
    if args.cluster:
        return run_cluster_simulate(args)
    if not (args.trace or args.models):
        print("error: give --trace or --models (or --cluster FILE)", file=sys.stderr)
        return 2
    if args.slo_scales is None:
        args.slo_scales = [5.0, 10.0]
    from seallm.bench.cli import workload_from_args
    from seallm.bench.table import format_table
    from seallm.models.config import CheckpointError
    from seallm.sim.runner import run_simulation, simulated_alone_latency
    from seallm.bench.workload import build_workload

    try:
        dep, configs = sim_config_from_args(args)
        workload = workload_from_args(args)
        requests = build_workload(workload, args.seed)
        alone = simulated_alone_latency(configs[0], requests)
        results = [(c.scheduling_policy, run_simulation(c, requests, alone)) for c in configs]
    except (CheckpointError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = {"deployment": {"models": [m.name for m in dep.models], "kv_pages": configs[0].kv_pages,
                          "page_size_bytes": configs[0].page_size_bytes}, "policies": {}}
    for pol, res in results:
        d = res.device
        print(f"\n== policy {pol}: {len(d.records)} requests, {d.num_steps} iterations, "
              f"busy {d.busy_s:.1f} s of {d.makespan_s:.1f} s, {d.num_preemptions} preemptions "
              f"({d.num_swap_outs} by swapping), {d.num_loads} model loads")
        print(format_table(res.metrics, tuple(args.slo_scales)))
        o = res.metrics.overall
        out["policies"][pol] = dict(
            normalized_latency_s=o.normalized_latency_s, mean_e2e_s=o.e2e.mean, p99_e2e_s=o.e2e.p99,
            mean_ttft_s=o.ttft.mean, p99_ttft_s=o.ttft.p99, output_throughput=o.output_throughput,
            slo_attainment={str(k): v for k, v in (o.slo_attainment or {}).items()},
            iterations=d.num_steps, busy_s=d.busy_s, makespan_s=d.makespan_s, preemptions=d.num_preemptions,
            swap_outs=d.num_swap_outs, model_loads=d.num_loads, fast_forwarded_iterations=d.num_fast_forwarded)
    if args.output:
        with open(args.output, "w") as f:
            json.dump(out, f, indent=2)
        print(f"wrote {args.output}")
    return 0
