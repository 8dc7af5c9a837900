"""Top-level benchmark configuration (:class:`BenchConfig`)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from seallm.bench.baseline import AloneOverride
from seallm.bench.calibrate import CalibrationConfig
from seallm.bench.client import ClientConfig
from seallm.bench.prompts import PromptConfig
from seallm.bench.workload import Workload

__all__ = ["BenchConfig"]


@dataclass(frozen=True)
class BenchConfig:
    """Everything one benchmark run needs.

    ``workload``: :class:`~seallm.bench.workload.AzureWorkload`,
    :class:`~seallm.bench.workload.SyntheticWorkload` or a sequence of
    :class:`~seallm.bench.workload.BenchRequest`.
    ``client``: endpoint, auth, time bounds, concurrency, progress bar.
    ``prompts``: token-id range or tokenizer for text prompts.
    ``calibration``: how served-alone latencies are measured when not given.
    ``alone``: user-given served-alone coefficients per model (key ``"*"`` = every model).
    ``slo_scales``: SLO scales for SLO attainment (E2E <= scale x alone latency).
    ``output_dir``: where ``summary.json``, ``requests.csv`` and plots go (None = write nothing).
    ``plots``: write PNG plots into ``output_dir``. ``seed``: seeds workload and prompts.
    """

    workload: Workload
    client: ClientConfig = field(default_factory=ClientConfig)
    prompts: PromptConfig = field(default_factory=PromptConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    alone: Mapping[str, AloneOverride] = field(default_factory=dict)
    slo_scales: tuple[float, ...] = (5.0, 10.0)
    output_dir: str | None = None
    plots: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        for s in self.slo_scales:
            if not (s > 0 and math.isfinite(s)):
                raise ValueError(f"SLO scales must be > 0, got {s}")
