"""``seallm place``: plan which services share which device groups of a cluster.

Reads a cluster file (``--config``, or ``default``: 32 H100s and MuxServe's 19-model mix
under the Azure traces), measures each service's rate and mean lengths on the file's
workload, runs a placement algorithm (SeaLLM's two-stage placement by default, or a
baseline's), prints the plan (groups, tensor-parallel degree, models, predicted latency)
and writes it in the deployment-file shape ``seallm serve`` reads (``--output``).
"""

from __future__ import annotations

import argparse
import sys


def add_place_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("place", help="plan a cluster placement (groups, TP, models per group)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, metavar="FILE", help="cluster file (YAML), or 'default'")
    p.add_argument("--algorithm", default="seallm", choices=("seallm", "dedicated", "alpaserve", "muxserve"),
                   help="placement algorithm (default seallm; dedicated is vLLM's one model per group)")
    p.add_argument("--duration", type=float, default=None, metavar="S", help="workload duration (overrides the file)")
    p.add_argument("--rate-scale", type=float, default=None, help="arrival-rate multiplier (overrides the file)")
    p.add_argument("--seed", type=int, default=0, help="workload seed (default 0)")
    p.add_argument("--output", default=None, metavar="FILE", help="write the plan as a deployment file (YAML)")
    p.set_defaults(func=run_place)


def deployment_yaml(plan, cfg, device_prefix: str = "cuda") -> dict:
    """The plan in the deployment-file shape: ``models`` (name and checkpoint path; the
    architecture name where the cluster file gives no path), one ``replicas`` entry per
    non-empty group (its models, its first device, its tensor-parallel degree), routing by
    least load."""
    models = [{"name": s.name, "path": s.path or s.arch.name} for s in cfg.services]
    replicas = []
    for i, g in enumerate(plan.groups):
        if g.models:
            replicas.append({"name": f"g{i}", "models": list(g.models), "device": f"{device_prefix}:{g.devices[0]}",
                             "tensor_parallel_size": g.tensor_parallel_size})
    return {"models": models, "scheduling_policy": "seallm", "kv_cache_memory": None, "replicas": replicas,
            "routing_policy": "least_loaded"}


def run_place(args: argparse.Namespace) -> int:
    """Run ``seallm place``. Returns 0, or 2 on bad input."""
    import yaml

    from seallm.cluster.config import load_cluster
    from seallm.sim.cluster import PLACEMENTS, service_loads

    try:
        cfg = load_cluster(args.config).with_overrides(args.duration, args.rate_scale)
        requests = cfg.workload.requests([s.name for s in cfg.services], args.seed)
        loads = service_loads(requests, cfg.archs, cfg.workload.replay_s)
        plan = PLACEMENTS[args.algorithm](loads, cfg.cluster, chunk_tokens=cfg.scheduler.max_num_batched_tokens)
        plan.check(cfg.cluster, cfg.archs)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    c = cfg.cluster
    rate = {s.name: s.rate for s in loads}
    print(f"{args.algorithm} placement of {len(cfg.services)} services on {c.num_nodes} x {c.devices_per_node} "
          f"{c.device} ({len(requests)} requests over {cfg.workload.replay_s:.0f} s); search {plan.search_s:.2f} s; "
          f"predicted mean slowdown {plan.objective:.3f}")
    print(f"{'group':>5}  {'node':>4}  {'devices':<14} {'TP':>2}  models (req/s, predicted mean E2E s)")
    for i, g in enumerate(plan.groups):
        if not g.models:
            continue
        devs = f"{g.devices[0]}-{g.devices[-1]}" if len(g.devices) > 1 else str(g.devices[0])
        pred = dict(g.predicted_e2e_s)
        ms = ", ".join(f"{m} ({rate[m] / len(plan.replicas_of(m)):.2f}, {pred.get(m, float('nan')):.2f})"
                       for m in g.models)
        print(f"{i:>5}  {g.node:>4}  {devs:<14} {g.tensor_parallel_size:>2}  {ms}")
    idle = sum(len(g.devices) for g in plan.groups if not g.models)
    if idle:
        print(f"{idle} device(s) left idle")
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write("# written by `seallm place`; model paths default to the architecture name: point them at\n"
                    "# checkpoints. Groups with tensor_parallel_size > 1 need the tensor-parallel engine.\n")
            yaml.safe_dump(deployment_yaml(plan, cfg), f, sort_keys=False)
        print(f"wrote {args.output}")
    return 0
