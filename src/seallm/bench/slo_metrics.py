"""Per-stage SLO attainment of recorded requests (SLOs-Serve's checkpointed rule).

Each request is scored by :func:`seallm.sched.slo.meets_slo` against its own SLO (or the
default class's), with a TTFT slowdown resolved against the predicted zero-load prefill time
of its prompt under the given step-time model, exactly as the ``slos-serve`` policy plans
for it. A request that failed or was refused (HTTP 429) misses, and so does one an SLO
planner served best-effort, even if it happened to finish in time (the reference's rule:
attainment counts requests admitted *and* on time; requests of a system without admission
control all count as admitted). Reference: ``shared/reference/slo-scheduling.md`` §1.2, §2.4.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from seallm.bench.records import RequestRecord
from seallm.core import SLO
from seallm.cost import CostModel
from seallm.sched.slo import SLO_CLASSES, meets_slo, ttft_target_s, zero_load_prefill_s

__all__ = ["SLOAttainment", "slo_attainment", "slo_verdicts"]


def slo_verdicts(records: Sequence[RequestRecord], slos: Sequence[SLO | None],
                 cost_models: Mapping[str, CostModel], default_slo_class: str = "chatbot") -> list[bool]:
    """Whether each request met its SLO (records and ``slos`` in the same order).

    Raises:
        KeyError: a record's model without a cost model, or an unknown default class.
        ValueError: ``records`` and ``slos`` of different lengths.
    """
    if len(records) != len(slos):
        raise ValueError(f"{len(records)} records but {len(slos)} SLOs")
    default = SLO_CLASSES[default_slo_class]
    out = []
    for rec, slo in zip(records, slos):
        if not rec.ok or rec.sent_s is None:
            out.append(False)
            continue
        s = slo if slo is not None and slo.has_stage_targets else default
        zero = zero_load_prefill_s(cost_models[rec.model], rec.input_len)
        ttft = ttft_target_s(s, zero)
        if ttft is None:
            ttft = ttft_target_s(default, zero)
        out.append(meets_slo(s, rec.sent_s, rec.token_times_s, ttft))
    return out


@dataclass(frozen=True)
class SLOAttainment:
    """Attainment over a run.

    Attributes:
        attainment: fraction of all requests that met their SLO and were not served
            best-effort (refused ones miss).
        met: requests that met their SLO, best-effort ones included.
        guaranteed: requests an SLO planner admitted; guaranteed_met: of them, met.
        best_effort: requests served best-effort; refused: requests that got an error.
    """

    attainment: float
    met: int
    num_requests: int
    guaranteed: int
    guaranteed_met: int
    best_effort: int
    refused: int

    @property
    def guaranteed_attainment(self) -> float | None:
        """Fraction of guaranteed requests that met their SLO (None: none guaranteed)."""
        return self.guaranteed_met / self.guaranteed if self.guaranteed else None


def slo_attainment(records: Sequence[RequestRecord], slos: Sequence[SLO | None],
                   cost_models: Mapping[str, CostModel], default_slo_class: str = "chatbot") -> SLOAttainment:
    """Summary of :func:`slo_verdicts` (same arguments and errors)."""
    ok = slo_verdicts(records, slos, cost_models, default_slo_class)
    g = [m for m, r in zip(ok, records) if r.admission == "guaranteed"]
    n = len(records)
    good = sum(1 for m, r in zip(ok, records) if m and r.admission != "best_effort")
    return SLOAttainment(good / n if n else 0.0, sum(ok), n, len(g), sum(g),
                         sum(1 for r in records if r.admission == "best_effort"),
                         sum(1 for r in records if r.error is not None))
