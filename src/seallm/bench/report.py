"""Write a run's report: ``summary.json``, ``requests.csv``, ``calibration.csv`` and PNG plots.

``summary.json``: ``{"started_at", "config", "alone_latency", "duration_s", "send_lag",
"per_model": {model: metrics}, "overall": metrics, "files"}``; latencies in s, throughputs
in req/s and tokens/s, normalized latency in s/token, SLO attainment as a fraction keyed by
scale (e.g. ``"5"``). ``requests.csv``: one row per request (columns :data:`CSV_COLUMNS`).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from seallm.bench.baseline import AloneLatency
from seallm.bench.metrics import BenchMetrics, LatencyStats, ServiceMetrics
from seallm.bench.records import RequestRecord
from seallm.bench.workload import AzureWorkload, SyntheticWorkload

if TYPE_CHECKING:  # pragma: no cover
    from seallm.bench.config import BenchConfig
    from seallm.bench.runner import BenchResult

__all__ = ["CSV_COLUMNS", "config_to_dict", "metrics_to_dict", "write_records_csv", "write_report", "write_summary"]

CSV_COLUMNS = (
    "index", "model", "scheduled_s", "sent_s", "first_token_s", "finish_s",
    "input_len", "output_len", "tokens_in", "tokens_out",
    "ttft_s", "tpot_s", "e2e_s", "normalized_latency_s", "alone_latency_s",
    "finish_reason", "error",
)


def _stats(s: LatencyStats) -> dict[str, Any]:
    return dataclasses.asdict(s)


def _service(m: ServiceMetrics) -> dict[str, Any]:
    d = {f.name: getattr(m, f.name) for f in dataclasses.fields(m)}
    for k in ("ttft", "tpot", "e2e"):
        d[k] = _stats(d[k])
    d["tail_latency_s"] = m.tail_latency_s
    if m.slo_attainment is not None:
        d["slo_attainment"] = {f"{s:g}": v for s, v in m.slo_attainment.items()}
    return d


def metrics_to_dict(metrics: BenchMetrics) -> dict[str, Any]:
    """JSON-ready dict of :class:`BenchMetrics`."""
    return {
        "duration_s": metrics.duration_s,
        "send_lag": _stats(metrics.send_lag),
        "per_model": {k: _service(v) for k, v in metrics.per_model.items()},
        "overall": _service(metrics.overall),
    }


def config_to_dict(config: BenchConfig) -> dict[str, Any]:
    """JSON-ready dict of a :class:`BenchConfig`; the API key is redacted and an explicit
    request list is summarized by its length."""
    w = config.workload
    if isinstance(w, (AzureWorkload, SyntheticWorkload)):
        workload = {"type": "azure" if isinstance(w, AzureWorkload) else "synthetic", **dataclasses.asdict(w)}
    else:
        workload = {"type": "requests", "num_requests": len(list(w))}
    client = dataclasses.asdict(config.client)
    if client.get("api_key"):
        client["api_key"] = "***"
    return {
        "workload": workload,
        "client": client,
        "prompts": dataclasses.asdict(config.prompts),
        "calibration": dataclasses.asdict(config.calibration),
        "alone": {k: dataclasses.asdict(v) for k, v in config.alone.items()},
        "slo_scales": list(config.slo_scales),
        "seed": config.seed,
        "output_dir": config.output_dir,
    }


def _alone_dict(alone: Mapping[str, AloneLatency | None]) -> dict[str, Any]:
    return {m: (dataclasses.asdict(a) if a is not None else None) for m, a in alone.items()}


def _num(x: float | None) -> str:
    return "" if x is None else repr(round(x, 9))


def write_records_csv(records: Sequence[RequestRecord], path: str,
                      alone: Mapping[str, AloneLatency | None] | None = None) -> str:
    """Write one CSV row per record (times in s); return ``path``. Raises ``OSError``."""
    alone = alone or {}
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(CSV_COLUMNS)
        for r in records:
            base = alone.get(r.model)
            n_in = r.tokens_in if r.ok else r.input_len
            n_out = r.tokens_out if r.ok else r.output_len
            w.writerow([
                r.index, r.model, _num(r.scheduled_s), _num(r.sent_s), _num(r.first_token_s), _num(r.finish_s),
                r.input_len, r.output_len, r.tokens_in, r.tokens_out,
                _num(r.ttft_s), _num(r.tpot_s), _num(r.e2e_s), _num(r.normalized_latency_s),
                _num(base.latency(n_in, n_out) if base is not None else None),
                r.finish_reason or "", r.error or "",
            ])
    return path


def write_summary(result: BenchResult, path: str, files: Sequence[str] = ()) -> str:
    """Write ``summary.json`` for ``result``; return ``path``. Raises ``OSError``."""
    doc = {
        "started_at": result.started_at,
        "config": config_to_dict(result.config),
        "alone_latency": _alone_dict(result.alone),
        **metrics_to_dict(result.metrics),
        "files": [os.path.basename(p) for p in files],
    }
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=2, allow_nan=False)
        f.write("\n")
    return path


def write_report(result: BenchResult, out_dir: str, plots: bool = True) -> list[str]:
    """Write every report file of ``result`` into ``out_dir`` (created if missing).

    Returns the paths written: ``requests.csv``, ``calibration.csv`` (if any calibration),
    the PNG plots (if ``plots``) and ``summary.json``. Raises ``OSError``.
    """
    os.makedirs(out_dir, exist_ok=True)
    files = [write_records_csv(result.records, os.path.join(out_dir, "requests.csv"), result.alone)]
    if result.calibration_records:
        files.append(write_records_csv(result.calibration_records, os.path.join(out_dir, "calibration.csv"),
                                       result.alone))
    if plots:
        from seallm.bench.plots import plot_cdfs, plot_per_model

        files += plot_cdfs(result.records, out_dir)
        files.append(plot_per_model(result.metrics, result.config.slo_scales, out_dir))
    summary = os.path.join(out_dir, "summary.json")
    files.append(summary)
    write_summary(result, summary, files)
    return files
