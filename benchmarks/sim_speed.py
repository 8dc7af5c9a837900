"""The cluster simulator's speed: one hour of the default cluster at the traces' real rate
(torch-free).

The issue's target: one hour of Azure-rate traffic on 32 devices in under 60 s of wall time
on this 2-core machine, with results identical to step-by-step simulation. For every system
(seallm, vLLM, AlpaServe, MuxServe, each with its own placement and policy) this runs:

* ``--duration`` s (default 3600) of the default cluster (``seallm simulate --cluster
  default``: 32 H100s, 19 models, the Azure conv + code traces at rate scale 1) with
  fast-forward, ``--repeats`` times in a rotating system order: the simulation's wall time
  (median, range), placement and workload time, iterations and the share fast-forwarded;
* a ``--reference-duration`` s window (default 600) both fast-forwarded and step by step
  (alternating which runs first): whether every request record (every token's time) is
  identical, and the speed-up;
* a cProfile of seallm's fast-forwarded reference window: where the time goes.

Writes ``benchmarks/results/sim_speed.json``.

    python benchmarks/sim_speed.py [--duration 3600] [--reference-duration 600] [--repeats 3]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import statistics
import sys
import time
from dataclasses import replace

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import write_result  # noqa: E402

from seallm.cluster.config import default_cluster  # noqa: E402
from seallm.sim.compare import compare_systems  # noqa: E402

SYSTEMS = ("seallm", "vllm", "alpaserve", "muxserve")


def run(cfg, system: str, fast_forward: bool) -> tuple[dict, object, float]:
    t0 = time.perf_counter()
    res = compare_systems(cfg, [system], fast_forward=fast_forward)[system]
    total = time.perf_counter() - t0
    run = res.run
    row = dict(simulation_wall_s=run.wall_s, total_wall_s=total, placement_search_s=run.plan.search_s,
               iterations=run.num_steps, fast_forwarded_iterations=run.num_fast_forwarded,
               simulated_s=run.makespan_s, requests=len(run.records),
               us_per_iteration=1e6 * run.wall_s / max(run.num_steps, 1))
    return row, run, total


def profile(cfg, system: str, top: int = 15) -> dict:
    prof = cProfile.Profile()
    prof.enable()
    compare_systems(cfg, [system])
    prof.disable()
    st = pstats.Stats(prof, stream=io.StringIO())
    total = st.total_tt
    rows = []
    for (file, line, fn), (cc, nc, tt, ct, _) in sorted(st.stats.items(), key=lambda kv: -kv[1][2])[:top]:
        rows.append(dict(function=f"{os.path.relpath(file) if file.startswith('/') else file}:{line}({fn})",
                         calls=nc, tottime_share=tt / total, cumtime_share=ct / total))
    return dict(system=system, profiled_total_s=total, by_own_time=rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=3600.0, help="simulated seconds of arrivals")
    ap.add_argument("--reference-duration", type=float, default=600.0,
                    help="window also simulated step by step (0: skip)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--systems", nargs="+", default=list(SYSTEMS))
    ap.add_argument("--name", default="sim_speed")
    args = ap.parse_args()
    base = default_cluster()

    def at(duration: float):
        return replace(base, workload=replace(base.workload, duration_s=duration))

    out = dict(benchmark="sim_speed", cluster="default (32 x h100-sxm, 19 models, Azure conv + code at rate scale 1)",
               duration_s=args.duration, reference_duration_s=args.reference_duration, repeats=args.repeats,
               target_wall_s=60.0, systems={})
    hour = at(args.duration)
    rows: dict[str, list[dict]] = {s: [] for s in args.systems}
    for rep in range(args.repeats):
        order = args.systems[rep % len(args.systems):] + args.systems[:rep % len(args.systems)]
        for system in order:
            row, _, _ = run(hour, system, True)
            rows[system].append(row)
            print(f"[{rep}] {system}: {row['simulation_wall_s']:.1f} s for {row['simulated_s']:.0f} simulated s, "
                  f"{row['iterations']} iterations ({row['fast_forwarded_iterations'] / row['iterations']:.0%} "
                  f"fast-forwarded)", flush=True)
    for system in args.systems:
        walls = [r["simulation_wall_s"] for r in rows[system]]
        totals = [r["total_wall_s"] for r in rows[system]]
        first = rows[system][0]
        out["systems"][system] = dict(
            simulation_wall_s=dict(median=statistics.median(walls), min=min(walls), max=max(walls), runs=walls),
            total_wall_s=dict(median=statistics.median(totals), min=min(totals), max=max(totals)),
            meets_target=statistics.median(walls) < 60.0, iterations=first["iterations"],
            fast_forwarded_share=first["fast_forwarded_iterations"] / max(first["iterations"], 1),
            us_per_iteration=statistics.median(r["us_per_iteration"] for r in rows[system]),
            simulated_s=first["simulated_s"], requests=first["requests"],
            placement_search_s=first["placement_search_s"])
    if args.reference_duration > 0:
        ref = at(args.reference_duration)
        for i, system in enumerate(args.systems):
            got = {}
            for ff in ((True, False) if i % 2 == 0 else (False, True)):
                row, r, _ = run(ref, system, ff)
                got[ff] = (row, r)
            (fast, rf), (step, rs) = got[True], got[False]
            identical = rf.records == rs.records and (rf.num_steps, rf.busy_s, rf.makespan_s) == (
                rs.num_steps, rs.busy_s, rs.makespan_s)
            out["systems"][system]["reference"] = dict(
                fast_forward_wall_s=fast["simulation_wall_s"], step_by_step_wall_s=step["simulation_wall_s"],
                speedup=step["simulation_wall_s"] / max(fast["simulation_wall_s"], 1e-9), identical=identical,
                requests=len(rf.records), iterations=rf.num_steps,
                step_by_step_us_per_iteration=step["us_per_iteration"])
            print(f"reference {system}: step by step {step['simulation_wall_s']:.1f} s, fast-forward "
                  f"{fast['simulation_wall_s']:.1f} s, identical: {identical}", flush=True)
        out["profile"] = profile(ref, "seallm" if "seallm" in args.systems else args.systems[0])
    for system, s in out["systems"].items():
        w = s["simulation_wall_s"]
        print(f"{system}: {w['median']:.1f} s (range {w['min']:.1f}-{w['max']:.1f}) per {args.duration:g} "
              f"simulated s; target < 60 s: {'met' if s['meets_target'] else 'NOT met'}")
    print("wrote", write_result(args.name, out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
