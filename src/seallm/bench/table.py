"""Plain-text table of benchmark metrics (one row per model plus ``overall``)."""

from __future__ import annotations

from seallm.bench.metrics import BenchMetrics, ServiceMetrics

__all__ = ["format_table"]


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x * 1e3:.1f}"


def _s(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:.1f}%"


def format_table(metrics: BenchMetrics, slo_scales: tuple[float, ...] = ()) -> str:
    """Render ``metrics`` as an aligned text table.

    Units: throughput req/s and tok/s; TTFT and TPOT in ms; E2E in s; normalized latency
    in ms/token; SLO attainment in %.
    """
    head = ["model", "reqs", "ok", "fail", "req/s", "out tok/s", "TTFT mean ms", "TTFT p99 ms",
            "TPOT mean ms", "TPOT p99 ms", "E2E mean s", "E2E p50 s", "E2E p90 s", "E2E p99 s",
            "norm ms/tok"] + [f"SLO@{s:g}" for s in slo_scales]

    def row(m: ServiceMetrics) -> list[str]:
        slo = m.slo_attainment or {}
        return [m.model, str(m.num_requests), str(m.num_completed), str(m.num_failed),
                f"{m.request_throughput:.2f}", f"{m.output_throughput:.1f}",
                _ms(m.ttft.mean), _ms(m.ttft.p99), _ms(m.tpot.mean), _ms(m.tpot.p99),
                _s(m.e2e.mean), _s(m.e2e.p50), _s(m.e2e.p90), _s(m.e2e.p99),
                _ms(m.normalized_latency_s)] + [_pct(slo.get(float(s))) for s in slo_scales]

    rows = [row(m) for m in metrics.per_model.values()] + [row(metrics.overall)]
    widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    sep = "-" * len(line(head))
    out = [line(head), sep] + [line(r) for r in rows[:-1]] + [sep, line(rows[-1])]
    out.append(f"duration {metrics.duration_s:.2f} s; send lag mean {_ms(metrics.send_lag.mean)} ms, "
               f"p99 {_ms(metrics.send_lag.p99)} ms")
    return "\n".join(out)
