"""PNG plots of a benchmark run (matplotlib, Agg canvas; no pyplot global state).

- ``e2e_cdf.png`` / ``ttft_cdf.png``: empirical CDF of E2E / TTFT latency per model;
- ``per_model.png``: per model, normalized latency (ms/token), P99 E2E (s) and SLO
  attainment (%) at each SLO scale.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from seallm.bench.metrics import BenchMetrics
from seallm.bench.records import RequestRecord

__all__ = ["plot_cdfs", "plot_per_model"]


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _by_model(records: Sequence[RequestRecord]) -> Mapping[str, list[RequestRecord]]:
    out: dict[str, list[RequestRecord]] = {}
    for r in records:
        out.setdefault(r.model, []).append(r)
    return out


def plot_cdfs(records: Sequence[RequestRecord], out_dir: str) -> list[str]:
    """Write ``e2e_cdf.png`` and ``ttft_cdf.png`` into ``out_dir``; return their paths.

    Raises ``OSError`` if a file cannot be written.
    """
    paths = []
    groups = _by_model(records)
    for name, attr, label in (("e2e_cdf.png", "e2e_s", "E2E latency (s)"),
                              ("ttft_cdf.png", "ttft_s", "TTFT (s)")):
        fig = _figure(6.4, 4.2)
        ax = fig.add_subplot(1, 1, 1)
        for model, recs in groups.items():
            v = sorted(getattr(r, attr) for r in recs if r.ok)
            if not v:
                continue
            n = len(v)
            # start at (v[0], 0) so that even a single request draws a visible rise
            ax.step([v[0]] + v, [0.0] + [(i + 1) / n for i in range(n)], where="post", label=f"{model} (n={n})")
        ax.set_xlabel(label)
        ax.set_ylabel("fraction of requests")
        ax.set_ylim(0, 1.02)
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="lower right", fontsize="small")
        ax.set_title(f"{label.split(' (')[0]} CDF per model")
        fig.tight_layout()
        path = os.path.join(out_dir, name)
        fig.savefig(path)
        paths.append(path)
    return paths


def plot_per_model(metrics: BenchMetrics, slo_scales: Sequence[float], out_dir: str) -> str:
    """Write ``per_model.png`` (bar charts per model) into ``out_dir``; return its path.

    Missing values (no completed request, no baseline) are drawn as empty bars. Raises
    ``OSError`` if the file cannot be written.
    """
    models = list(metrics.per_model)
    rows = [metrics.per_model[m] for m in models]
    xs = list(range(len(models)))
    fig = _figure(max(9.0, 1.2 * len(models) + 6), 3.8)
    ax1, ax2, ax3 = (fig.add_subplot(1, 3, i) for i in (1, 2, 3))
    ax1.bar(xs, [(m.normalized_latency_s or 0.0) * 1e3 for m in rows], color="tab:blue")
    ax1.set_title("normalized latency (ms/token)")
    ax2.bar(xs, [m.e2e.p99 or 0.0 for m in rows], color="tab:red")
    ax2.set_title("P99 E2E latency (s)")
    scales = list(slo_scales)
    width = 0.8 / max(1, len(scales))
    for k, s in enumerate(scales):
        vals = [((m.slo_attainment or {}).get(float(s)) or 0.0) * 100 for m in rows]
        ax3.bar([x - 0.4 + width * (k + 0.5) for x in xs], vals, width=width, label=f"scale {s:g}")
    ax3.set_title("SLO attainment (%)")
    ax3.set_ylim(0, 105)
    if scales:
        ax3.legend(fontsize="small")
    for ax in (ax1, ax2, ax3):
        ax.set_xticks(xs)
        ax.set_xticklabels(models, rotation=30, ha="right", fontsize="small")
        ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    path = os.path.join(out_dir, "per_model.png")
    fig.savefig(path)
    return path
