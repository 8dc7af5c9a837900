"""Run several serving systems on the same cluster and requests, and summarize them
(torch-free): what ``seallm simulate --cluster`` and ``benchmarks/cluster_eval.py`` do.

Every system plans its placement from the same service loads (rates and mean lengths
measured on the requests), serves the same requests in the cluster simulator, and is
measured with the metrics of ``seallm bench``; SLO attainment uses one served-alone
reference per service for every system (:func:`~seallm.sim.cluster.alone_latency`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from seallm.bench.metrics import BenchMetrics, compute_metrics
from seallm.cluster.config import ClusterConfig
from seallm.cluster.replacement import ReplacementConfig
from seallm.sim.cluster import SYSTEMS, ClusterRun, alone_latency, place, service_loads, simulate_cluster


@dataclass(frozen=True)
class SystemResult:
    """One system's run and its metrics."""

    run: ClusterRun
    metrics: BenchMetrics

    def summary(self) -> dict:
        """JSON-ready numbers (s; SLO attainment keyed by scale as text)."""
        o = self.metrics.overall
        r = self.run
        return dict(
            normalized_latency_s=o.normalized_latency_s, mean_e2e_s=o.e2e.mean, p50_e2e_s=o.e2e.p50,
            p99_e2e_s=o.e2e.p99, mean_ttft_s=o.ttft.mean, p99_ttft_s=o.ttft.p99, mean_tpot_s=o.tpot.mean,
            p99_tpot_s=o.tpot.p99, output_throughput=o.output_throughput,
            slo_attainment={str(k): v for k, v in (o.slo_attainment or {}).items()},
            completed=o.num_completed, failed=o.num_failed, iterations=r.num_steps, busy_s=r.busy_s,
            preemptions=r.num_preemptions, makespan_s=r.makespan_s, simulation_wall_s=r.wall_s,
            fast_forwarded_iterations=r.num_fast_forwarded,
            placement_search_s=r.plan.search_s, placement_objective=r.plan.objective,
            groups=[dict(devices=list(g.devices), tensor_parallel_size=g.tensor_parallel_size, models=list(g.models))
                    for g in r.plan.groups if g.models],
            replacement_checks=len(r.replacements), replacement_switches=r.num_switches,
            switches=[dict(time_s=d.time_s, window_s=d.window_s, shift=d.shift, gain_s=d.gain_s, cost_s=d.cost_s,
                           moved_groups=d.moved_groups) for d in r.replacements if d.switched],
            per_model={m: dict(normalized_latency_s=pm.normalized_latency_s, mean_e2e_s=pm.e2e.mean,
                               p99_e2e_s=pm.e2e.p99, completed=pm.num_completed,
                               slo_attainment={str(k): v for k, v in (pm.slo_attainment or {}).items()})
                       for m, pm in self.metrics.per_model.items()})


def parse_system(entry: str, default: ReplacementConfig) -> tuple[str, ReplacementConfig]:
    """``NAME`` or ``NAME@MODE`` (a system of :data:`~seallm.sim.cluster.SYSTEMS` with a
    replacement mode: ``seallm@adaptive``, ``alpaserve@fixed``) -> (system name, the
    replacement config: ``default`` with that mode).

    Raises:
        ValueError: an unknown system or mode.
    """
    name, _, mode = entry.partition("@")
    if name not in SYSTEMS:
        raise ValueError(f"unknown system {name!r}; known: {list(SYSTEMS)} (optionally NAME@none|fixed|adaptive)")
    return name, replace(default, mode=mode) if mode else default


def compare_systems(cfg: ClusterConfig, systems: Sequence[str], seed: int = 0,
                    on_done: Callable[[str], None] | None = None,
                    fast_forward: bool = True) -> dict[str, SystemResult]:
    """Plan and simulate each of ``systems`` (names in :data:`~seallm.sim.cluster.SYSTEMS`,
    each optionally ``@none``, ``@fixed`` or ``@adaptive`` for its replacement mode; default
    ``cfg.replacement``) on ``cfg``'s cluster and requests; ``on_done(entry)`` after each (a
    progress bar). Results are keyed by the entries as given. ``fast_forward``: as
    :func:`~seallm.sim.cluster.simulate_cluster` (identical results; False: step by step).

    Raises:
        ValueError: an unknown system or mode, an empty workload, or a placement that fails.
    """
    parsed = {entry: parse_system(entry, cfg.replacement) for entry in systems}
    names = [s.name for s in cfg.services]
    requests = cfg.workload.requests(names, seed)
    loads = service_loads(requests, cfg.archs, cfg.workload.replay_s)
    alone = {s.name: alone_latency(s, cfg.cluster) for s in loads}
    out = {}
    for entry, (name, replacement) in parsed.items():
        spec = SYSTEMS[name]
        plan = place(spec, loads, cfg.cluster, cfg.scheduler)
        run = simulate_cluster(requests, plan, cfg.cluster, loads, spec, cfg.scheduler, replacement=replacement,
                               fast_forward=fast_forward)
        out[entry] = SystemResult(run, compute_metrics(run.records, alone, cfg.slo_scales))
        if on_done:
            on_done(entry)
    return out


def reference_entry(entries: Sequence[str]) -> str:
    """The entry ratios are taken against: ``seallm`` if present, else the first
    ``seallm@MODE``, else the first entry."""
    if "seallm" in entries:
        return "seallm"
    return next((e for e in entries if e.partition("@")[0] == "seallm"), entries[0])


def format_comparison(results: dict[str, SystemResult], slo_scales: Sequence[float], reference: str | None = None) -> str:
    """A text table: one row per system, with each metric's ratio to ``reference`` (default
    :func:`reference_entry`; baseline / reference for latencies, reference / baseline for
    SLO attainment: > 1 means the reference is better), and the number of re-placements
    when a system re-placed."""
    reference = reference or reference_entry(list(results))
    head = ["system", "norm lat (s/tok)", "P50 E2E (s)", "P99 E2E (s)", "P99 TTFT (s)", "P99 TPOT (s)"]
    head += [f"SLO@{k:g}" for k in slo_scales]
    replaced = any(r.run.replacements for r in results.values())
    if replaced:
        head.append("re-placements")
    rows = [head]
    ref = results.get(reference)

    def ratio(a: float | None, b: float | None) -> str:
        ok = a is not None and b is not None and math.isfinite(a) and math.isfinite(b) and b > 0
        return f" ({a / b:.2f}x)" if ok else ""

    for name, res in results.items():
        o = res.metrics.overall
        row = [name]
        ro = ref.metrics.overall if ref is not None and name != reference else None
        for v, rv in ((o.normalized_latency_s, ro and ro.normalized_latency_s), (o.e2e.p50, ro and ro.e2e.p50),
                      (o.e2e.p99, ro and ro.e2e.p99), (o.ttft.p99, ro and ro.ttft.p99), (o.tpot.p99, ro and ro.tpot.p99)):
            row.append("-" if v is None else f"{v:.4g}" + ratio(v, rv))
        for k in slo_scales:
            v = (o.slo_attainment or {}).get(k, float("nan"))
            rv = (ro.slo_attainment or {}).get(k) if ro is not None else None
            row.append(f"{v:.3f}" + (ratio(rv, v) if rv is not None and v > 0 else ""))
        if replaced:
            row.append(str(res.run.num_switches))
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    note = f"ratios: baseline / {reference} for latencies, {reference} / baseline for SLO attainment (> 1: {reference} better)"
    return "\n".join(lines + [note])


def plot_comparison(results: dict[str, SystemResult], slo_scales: Sequence[float], out_dir: str,
                    sweep: dict[float, dict[str, dict]] | None = None) -> list[str]:
    """PNG plots in ``out_dir``: SLO attainment vs SLO scale per system, normalized latency
    per model and system, and (with ``sweep``: rate scale -> system -> summary) normalized
    and P99 latency vs rate scale. Returns the paths."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    os.makedirs(out_dir, exist_ok=True)
    paths = []
    fig = Figure(figsize=(6, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for name, res in results.items():
        att = res.metrics.overall.slo_attainment or {}
        ax.plot(list(slo_scales), [att.get(k, float("nan")) for k in slo_scales], marker="o", label=name)
    ax.set_xlabel("SLO scale (x served-alone latency)")
    ax.set_ylabel("SLO attainment")
    ax.set_ylim(0, 1.02)
    ax.legend()
    ax.grid(alpha=0.3)
    paths.append(os.path.join(out_dir, "slo_attainment.png"))
    fig.savefig(paths[-1], dpi=120, bbox_inches="tight")

    models = list(next(iter(results.values())).metrics.per_model)
    fig = Figure(figsize=(max(6, 0.5 * len(models)), 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    width = 0.8 / max(len(results), 1)
    for i, (name, res) in enumerate(results.items()):
        vals = [res.metrics.per_model[m].normalized_latency_s if m in res.metrics.per_model else 0 for m in models]
        ax.bar([j + i * width for j in range(len(models))], vals, width, label=name)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(models))], models, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("normalized latency (s/token)")
    ax.set_yscale("log")
    ax.legend()
    paths.append(os.path.join(out_dir, "per_model.png"))
    fig.savefig(paths[-1], dpi=120, bbox_inches="tight")

    if sweep:
        fig = Figure(figsize=(10, 4))
        FigureCanvasAgg(fig)
        for k, (key, label) in enumerate((("normalized_latency_s", "normalized latency (s/token)"),
                                          ("p99_e2e_s", "P99 E2E latency (s)"))):
            ax = fig.add_subplot(1, 2, k + 1)
            scales = sorted(sweep)
            for name in results:
                ax.plot(scales, [sweep[x][name][key] if name in sweep[x] else float("nan") for x in scales],
                        marker="o", label=name)
            ax.set_xlabel("rate scale")
            ax.set_ylabel(label)
            ax.set_yscale("log")
            ax.grid(alpha=0.3)
            ax.legend()
        paths.append(os.path.join(out_dir, "latency_vs_rate.png"))
        fig.savefig(paths[-1], dpi=120, bbox_inches="tight")
    return paths
