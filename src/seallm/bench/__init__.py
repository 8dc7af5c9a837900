"""``seallm.bench``: traces, workloads, an open-loop load client for any OpenAI-compatible
endpoint, metrics, reports and plots. Torch-free.

Programmatic use::

    from seallm.bench import AzureWorkload, BenchConfig, ClientConfig, run_benchmark

    result = run_benchmark(BenchConfig(
        workload=AzureWorkload(traces=(("chat", "modelA"), ("code", "modelB")), duration_s=60),
        client=ClientConfig(base_url="http://127.0.0.1:8000"),
        output_dir="results/bench-demo",
    ))
    print(result.metrics.overall.e2e.p99)

Names are imported lazily so that ``import seallm.bench`` stays cheap (no aiohttp, no
matplotlib until used).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_EXPORTS = {
    "run_benchmark": "seallm.bench.runner",
    "arun_benchmark": "seallm.bench.runner",
    "BenchResult": "seallm.bench.runner",
    "BenchConfig": "seallm.bench.config",
    "ClientConfig": "seallm.bench.client",
    "replay": "seallm.bench.client",
    "PromptConfig": "seallm.bench.prompts",
    "CalibrationConfig": "seallm.bench.calibrate",
    "AloneLatency": "seallm.bench.baseline",
    "AloneOverride": "seallm.bench.baseline",
    "RequestRecord": "seallm.bench.records",
    "BenchMetrics": "seallm.bench.metrics",
    "ServiceMetrics": "seallm.bench.metrics",
    "LatencyStats": "seallm.bench.metrics",
    "compute_metrics": "seallm.bench.metrics",
    "percentile": "seallm.bench.metrics",
    "AzureWorkload": "seallm.bench.workload",
    "SyntheticWorkload": "seallm.bench.workload",
    "LengthConfig": "seallm.bench.workload",
    "BenchRequest": "seallm.bench.workload",
    "WorkloadError": "seallm.bench.workload",
    "build_workload": "seallm.bench.workload",
    "load_azure_trace": "seallm.bench.traces",
    "load_length_distribution": "seallm.bench.traces",
    "TraceError": "seallm.bench.traces",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # pragma: no cover
    from seallm.bench.baseline import AloneLatency, AloneOverride
    from seallm.bench.calibrate import CalibrationConfig
    from seallm.bench.client import ClientConfig, replay
    from seallm.bench.config import BenchConfig
    from seallm.bench.metrics import BenchMetrics, LatencyStats, ServiceMetrics, compute_metrics, percentile
    from seallm.bench.prompts import PromptConfig
    from seallm.bench.records import RequestRecord
    from seallm.bench.runner import BenchResult, arun_benchmark, run_benchmark
    from seallm.bench.traces import TraceError, load_azure_trace, load_length_distribution
    from seallm.bench.workload import (AzureWorkload, BenchRequest, LengthConfig, SyntheticWorkload,
                                       WorkloadError, build_workload)


def __getattr__(name: str):
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module 'seallm.bench' has no attribute {name!r}")
    value = getattr(importlib.import_module(mod), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
