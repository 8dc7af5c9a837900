"""``run_benchmark(config) -> BenchResult``: workload -> calibration -> replay -> metrics -> report."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as _dt
from dataclasses import dataclass

from seallm.bench.baseline import AloneLatency, resolve_overrides
from seallm.bench.calibrate import calibrate
from seallm.bench.client import replay
from seallm.bench.config import BenchConfig
from seallm.bench.metrics import BenchMetrics, compute_metrics
from seallm.bench.prompts import TextPrompts, make_prompt_source
from seallm.bench.records import RequestRecord
from seallm.bench.workload import BenchRequest, build_workload

__all__ = ["BenchResult", "arun_benchmark", "run_benchmark"]


@dataclass(frozen=True)
class BenchResult:
    """Outcome of one run.

    ``requests``: the workload sent; ``records``: one per request, same order.
    ``alone``: served-alone latency model per model (None: unknown, no SLO attainment).
    ``calibration_records``: measured calibration requests. ``started_at``: ISO-8601 UTC.
    ``files``: paths written (empty when ``config.output_dir`` is None).
    """

    config: BenchConfig
    requests: tuple[BenchRequest, ...]
    records: tuple[RequestRecord, ...]
    alone: dict[str, AloneLatency | None]
    calibration_records: tuple[RequestRecord, ...]
    metrics: BenchMetrics
    started_at: str
    files: tuple[str, ...] = ()


async def arun_benchmark(config: BenchConfig) -> BenchResult:
    """Async :func:`run_benchmark` (for callers already inside an event loop)."""
    requests = build_workload(config.workload, config.seed)
    prompts = make_prompt_source(config.prompts, config.seed)
    if isinstance(prompts, TextPrompts):  # tokenize before the clock starts, not during the replay
        for i, r in enumerate(requests):
            prompts.prompt(i, r.input_len)
    models = list(dict.fromkeys(r.model for r in requests))
    overrides = resolve_overrides(models, config.alone)
    started_at = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")

    to_measure = [m for m in models if not overrides[m].complete] if config.calibration.enabled else []
    fitted, cal_records = await calibrate(requests, to_measure, prompts, config.client, config.calibration)
    alone = {m: overrides[m].apply(fitted.get(m)) for m in models}

    records = await replay(requests, prompts, config.client)
    metrics = compute_metrics(records, alone, config.slo_scales)
    result = BenchResult(config, tuple(requests), tuple(records), alone, tuple(cal_records), metrics, started_at)
    if config.output_dir is not None:
        from seallm.bench.report import write_report

        files = write_report(result, config.output_dir, plots=config.plots)
        result = dataclasses.replace(result, files=tuple(files))
    return result


def run_benchmark(config: BenchConfig) -> BenchResult:
    """Run one benchmark and return its :class:`BenchResult`.

    Builds the workload, measures served-alone latencies where needed, replays the workload
    open-loop against ``config.client.base_url``, computes metrics and, if
    ``config.output_dir`` is set, writes the report there. Failed requests are recorded, not
    raised. Raises ``ValueError`` subclasses (``WorkloadError``, ``TraceError``,
    ``PromptError``) for an invalid configuration, ``OSError`` if the report cannot be
    written, and ``RuntimeError`` if called inside a running event loop (use
    :func:`arun_benchmark` there).
    """
    return asyncio.run(arun_benchmark(config))
