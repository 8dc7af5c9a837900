"""Benchmark metrics, per model (service) and overall (definitions: DESIGN.md "Metrics").

- TTFT = first token time - arrival; TPOT = (E2E - TTFT) / (output tokens - 1), over requests
  with 2+ output tokens; E2E = finish time - arrival (arrival = the moment the request was sent).
- Normalized latency = mean over requests of E2E / output tokens (s/token).
- SLO attainment at scale s = fraction of *all* requests (failed ones count as misses) with
  E2E <= s x the request's latency when served alone (:class:`~seallm.bench.baseline.AloneLatency`
  evaluated at the request's input and output token counts).
- Request throughput = completed requests / duration; output throughput = output tokens of
  completed requests / duration; duration = replay start to the last finish (s).

Percentiles are nearest-rank on the sorted sample, ``x[ceil(q/100 * n) - 1]`` (as in the traces
README). Statistics over no value are None.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from seallm.bench.baseline import AloneLatency
from seallm.bench.records import RequestRecord

__all__ = ["OVERALL", "BenchMetrics", "LatencyStats", "ServiceMetrics", "compute_metrics", "percentile",
           "slo_attainment"]

#: Key of the all-models row.
OVERALL = "overall"


def percentile(values: Iterable[float], q: float) -> float | None:
    """Nearest-rank percentile ``q`` in [0, 100] (None for no value). Raises ``ValueError`` for q outside."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be in [0, 100], got {q}")
    v = sorted(values)
    if not v:
        return None
    return v[max(0, math.ceil(q / 100.0 * len(v)) - 1)]


@dataclass(frozen=True)
class LatencyStats:
    """Mean and nearest-rank P50/P90/P99 of a latency sample (s); None when ``count == 0``."""

    count: int
    mean: float | None
    p50: float | None
    p90: float | None
    p99: float | None

    @classmethod
    def of(cls, values: Iterable[float]) -> LatencyStats:
        v = sorted(values)
        if not v:
            return cls(0, None, None, None, None)
        return cls(len(v), sum(v) / len(v), percentile(v, 50), percentile(v, 90), percentile(v, 99))


@dataclass(frozen=True)
class ServiceMetrics:
    """Metrics of one model's requests (or of all, ``model == "overall"``).

    Throughputs in requests/s and tokens/s; latencies in s; ``normalized_latency_s`` in
    s/token; ``slo_attainment`` maps SLO scale -> fraction in [0, 1] (None without a
    served-alone baseline).
    """

    model: str
    num_requests: int
    num_completed: int
    num_failed: int
    duration_s: float
    request_throughput: float
    output_throughput: float
    input_tokens: int
    output_tokens: int
    ttft: LatencyStats
    tpot: LatencyStats
    e2e: LatencyStats
    normalized_latency_s: float | None
    slo_attainment: dict[float, float] | None

    @property
    def tail_latency_s(self) -> float | None:
        """P99 E2E latency (s)."""
        return self.e2e.p99


@dataclass(frozen=True)
class BenchMetrics:
    """Per-model and overall metrics; ``send_lag`` = sent - scheduled time (s) of sent requests."""

    per_model: dict[str, ServiceMetrics]
    overall: ServiceMetrics
    duration_s: float
    send_lag: LatencyStats


def slo_attainment(
    records: Sequence[RequestRecord], alone: Mapping[str, AloneLatency | None], scales: Sequence[float]
) -> dict[float, float] | None:
    """Fraction of ``records`` with E2E <= scale x alone latency, per scale.

    Failed requests are misses (they need no baseline). None if ``records`` is empty or the
    model of a completed request has no baseline in ``alone``.
    """
    if not records or any(alone.get(r.model) is None for r in records if r.ok):
        return None
    out: dict[float, float] = {}
    for s in scales:
        hit = sum(1 for r in records if r.ok and r.e2e_s <= s * alone[r.model].latency(r.tokens_in, r.tokens_out))
        out[float(s)] = hit / len(records)
    return out


def _service(model: str, recs: Sequence[RequestRecord], duration_s: float,
             alone: Mapping[str, AloneLatency | None], scales: Sequence[float]) -> ServiceMetrics:
    ok = [r for r in recs if r.ok]
    out_tokens = sum(r.tokens_out for r in ok)
    norm = [r.normalized_latency_s for r in ok if r.normalized_latency_s is not None]
    return ServiceMetrics(
        model=model,
        num_requests=len(recs),
        num_completed=len(ok),
        num_failed=len(recs) - len(ok),
        duration_s=duration_s,
        request_throughput=len(ok) / duration_s if duration_s > 0 else 0.0,
        output_throughput=out_tokens / duration_s if duration_s > 0 else 0.0,
        input_tokens=sum(r.tokens_in for r in ok),
        output_tokens=out_tokens,
        ttft=LatencyStats.of(r.ttft_s for r in ok),
        tpot=LatencyStats.of(r.tpot_s for r in ok if r.tpot_s is not None),
        e2e=LatencyStats.of(r.e2e_s for r in ok),
        normalized_latency_s=sum(norm) / len(norm) if norm else None,
        slo_attainment=slo_attainment(recs, alone, scales) if scales else None,
    )


def compute_metrics(
    records: Sequence[RequestRecord],
    alone: Mapping[str, AloneLatency | None] | None = None,
    slo_scales: Sequence[float] = (),
    duration_s: float | None = None,
) -> BenchMetrics:
    """Metrics per model (in first-seen order) and overall.

    ``alone``: served-alone latency model per model; a model with completed requests but
    no baseline gets no SLO attainment (None), and neither does ``overall``. ``duration_s``: throughput denominator (s); default = the latest
    finish (or send) time of any record. Raises ``ValueError`` for no record.
    """
    if not records:
        raise ValueError("no record to summarize")
    alone = alone or {}
    if duration_s is None:
        ends = [t for r in records for t in (r.finish_s, r.sent_s) if t is not None]
        duration_s = max(ends) if ends else 0.0
    models: dict[str, list[RequestRecord]] = {}
    for r in records:
        models.setdefault(r.model, []).append(r)
    per_model = {m: _service(m, rs, duration_s, alone, slo_scales) for m, rs in models.items()}
    overall = _service(OVERALL, records, duration_s, alone, slo_scales)
    lag = LatencyStats.of(r.sent_s - r.scheduled_s for r in records if r.sent_s is not None)
    return BenchMetrics(per_model, overall, duration_s, lag)
