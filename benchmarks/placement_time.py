"""Wall time of the placement searches on 32 devices and 20 models (torch-free).

The issue's target: SeaLLM's placement of 32 devices and 20 models in under 10 s on this
machine. Services: the default cluster's 19 LLaMA models plus one Llama-3.1-8B, the Azure
traces at rate scales 1 and 32 (light and heavy), 600 s windows. Each search runs
``--repeats`` times; the JSON has the median and range per algorithm and load, and the
predicted objective of each plan.

    python benchmarks/placement_time.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import replace

from seallm.cluster.catalog import catalog_model
from seallm.cluster.config import ServiceEntry, default_cluster
from seallm.sim.cluster import PLACEMENTS, service_loads

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import write_json  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rate-scales", nargs="+", type=float, default=[1, 32])
    ap.add_argument("--output", default=os.path.join(RESULTS, "placement_time.json"))
    args = ap.parse_args()
    base = default_cluster()
    base = replace(base, services=base.services + (ServiceEntry("llama-3.1-8b-19", catalog_model("Llama-3.1-8B")),))
    out = {"devices": base.cluster.num_devices, "models": len(base.services), "repeats": args.repeats, "loads": {}}
    for x in args.rate_scales:
        cfg = base.with_overrides(duration_s=600 * x, rate_scale=x)
        reqs = cfg.workload.requests([s.name for s in cfg.services], 0)
        loads = service_loads(reqs, cfg.archs, cfg.workload.replay_s)
        row = {}
        for name, fn in PLACEMENTS.items():
            times, plan = [], None
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                plan = fn(loads, cfg.cluster)
                times.append(time.perf_counter() - t0)
            row[name] = {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
                         "groups": sum(1 for g in plan.groups if g.models), "objective": plan.objective}
            print(f"x{x:g} {name}: {statistics.median(times):.2f} s ({min(times):.2f}-{max(times):.2f})", flush=True)
        out["loads"][str(x)] = {"total_rate": sum(s.rate for s in loads), "algorithms": row}
    write_json(args.output, out)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
