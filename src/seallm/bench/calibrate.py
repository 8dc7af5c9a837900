"""Measure each model's "served alone" latency before the replay.

For every model that needs it, a few requests with lengths representative of that model's
workload (input lengths at evenly spaced quantiles, one fixed short output length) are sent
one at a time, nothing else in flight, after a warm-up request; TTFT is fitted as
``a + b * input_len`` and TPOT averaged (:func:`seallm.bench.baseline.fit_alone_latency`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from seallm.bench.baseline import AloneLatency, fit_alone_latency
from seallm.bench.client import ClientConfig, replay
from seallm.bench.prompts import PromptSource
from seallm.bench.records import RequestRecord
from seallm.bench.workload import BenchRequest

__all__ = ["CALIBRATION_INDEX_OFFSET", "CalibrationConfig", "calibrate", "calibration_requests"]

#: Calibration prompts use request indices from here, so they share nothing with the replay's.
CALIBRATION_INDEX_OFFSET = 1_000_000_000


@dataclass(frozen=True)
class CalibrationConfig:
    """Calibration settings.

    ``enabled``: measure models whose coefficients were not all given. ``requests_per_model``:
    measured requests per model (>= 1; 2+ distinct input lengths are needed for a TTFT slope).
    ``warmup_per_model``: unrecorded requests sent first. ``output_len``: output tokens per
    calibration request (capped by the model's longest workload output, at least 2).
    ``timeout_s``: bound on the whole calibration, s (the client's ``timeout_s`` too, if smaller).
    """

    enabled: bool = True
    requests_per_model: int = 4
    warmup_per_model: int = 1
    output_len: int = 16
    timeout_s: float = 600.0

    def __post_init__(self) -> None:
        if self.requests_per_model < 1:
            raise ValueError(f"calibration needs >= 1 request per model, got {self.requests_per_model}")
        if self.warmup_per_model < 0:
            raise ValueError(f"warm-up requests must be >= 0, got {self.warmup_per_model}")
        if self.output_len < 1:
            raise ValueError(f"calibration output length must be >= 1, got {self.output_len}")
        if not self.timeout_s > 0:
            raise ValueError(f"calibration timeout must be > 0 s, got {self.timeout_s}")


def _nearest_rank(sorted_vals: Sequence[int], q: float) -> int:
    return sorted_vals[max(0, math.ceil(q * len(sorted_vals)) - 1)]


def calibration_requests(
    workload: Sequence[BenchRequest], model: str, cfg: CalibrationConfig
) -> tuple[list[BenchRequest], list[BenchRequest]]:
    """(warm-up, measured) requests for ``model``, all with arrival 0.

    Measured input lengths are the model's workload input lengths at quantiles
    ``(k + 0.5) / n``, k = 0..n-1 (nearest rank); warm-ups use the median. Raises
    ``ValueError`` if the workload has no request for ``model``.
    """
    ins = sorted(r.input_len for r in workload if r.model == model)
    if not ins:
        raise ValueError(f"no request for model {model!r} in the workload")
    max_out = max(r.output_len for r in workload if r.model == model)
    out = min(cfg.output_len, max(2, max_out))
    n = cfg.requests_per_model
    measured = [BenchRequest(model, 0.0, _nearest_rank(ins, (k + 0.5) / n), out) for k in range(n)]
    warm = [BenchRequest(model, 0.0, _nearest_rank(ins, 0.5), out) for _ in range(cfg.warmup_per_model)]
    return warm, measured


async def calibrate(
    workload: Sequence[BenchRequest],
    models: Sequence[str],
    prompts: PromptSource,
    client: ClientConfig,
    cfg: CalibrationConfig,
) -> tuple[dict[str, AloneLatency | None], list[RequestRecord]]:
    """Measure ``models`` one request at a time. Returns the fitted latency model per model
    (None where every calibration request failed) and the measured records (warm-ups
    excluded). Never raises for failed requests.
    """
    if not models:
        return {}, []
    plan: list[tuple[BenchRequest, bool]] = []  # (request, measured?)
    for m in models:
        warm, measured = calibration_requests(workload, m, cfg)
        plan += [(r, False) for r in warm] + [(r, True) for r in measured]
    budget = cfg.timeout_s if client.timeout_s is None else min(cfg.timeout_s, client.timeout_s)
    one_at_a_time = replace(client, max_concurrency=1, progress=False, timeout_s=budget)
    records = await replay([r for r, _ in plan], prompts, one_at_a_time,
                           index_offset=CALIBRATION_INDEX_OFFSET, desc="calibration")
    kept = [rec for rec, (_, measured) in zip(records, plan) if measured]
    fitted = {m: fit_alone_latency(r for r in kept if r.model == m) for m in models}
    return fitted, kept
