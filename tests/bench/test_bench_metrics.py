"""Metrics against hand-computed examples (DESIGN.md "Metrics")."""

from __future__ import annotations

import pytest

from seallm.bench.baseline import AloneLatency
from seallm.bench.metrics import LatencyStats, compute_metrics, percentile, slo_attainment
from seallm.bench.records import RequestRecord
from seallm.bench.table import format_table


def rec(i, model, sent, first, finish, n_out, n_in=10, error=None):
    return RequestRecord(index=i, model=model, input_len=n_in, output_len=n_out, scheduled_s=sent, sent_s=sent,
                         first_token_s=first, finish_s=finish, tokens_in=n_in, tokens_out=n_out, error=error)


RECORDS = [
    rec(0, "A", 0.0, 0.1, 1.1, 11, n_in=100),  # ttft .1, e2e 1.1, tpot 1.0/10, norm 0.1
    rec(1, "A", 1.0, 1.3, 2.3, 5, n_in=50),  # ttft .3, e2e 1.3, tpot 1.0/4, norm 0.26
    rec(2, "B", 0.5, 0.75, 0.75, 1),  # ttft .25, e2e .25, no tpot, norm .25
    rec(3, "B", 0.6, None, 0.61, 0, error="HTTP 500: boom"),
    rec(4, "B", 2.0, 2.5, 3.9, 4),  # ttft .5, e2e 1.9, tpot 1.4/3, norm .475
]
ALONE = {"A": AloneLatency(0.05, 0.001, 0.05), "B": AloneLatency(0.1, 0.0, 0.1)}


def test_percentile_nearest_rank():
    xs = list(range(1, 11))
    assert percentile(xs, 50) == 5
    assert percentile(xs, 90) == 9
    assert percentile(xs, 99) == 10
    assert percentile(xs, 0) == 1 and percentile(xs, 100) == 10
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([], 50) is None
    with pytest.raises(ValueError):
        percentile(xs, 101)
    s = LatencyStats.of([0.4, 0.1, 0.2, 0.3])
    assert (s.count, s.mean, s.p50, s.p90, s.p99) == (4, pytest.approx(0.25), 0.2, 0.4, 0.4)
    assert LatencyStats.of([]).mean is None


def test_record_derived_latencies():
    r = RECORDS[0]
    assert r.ok and r.ttft_s == pytest.approx(0.1) and r.e2e_s == pytest.approx(1.1)
    assert r.tpot_s == pytest.approx(0.1)  # (E2E - TTFT) / (out - 1)
    assert r.normalized_latency_s == pytest.approx(0.1)
    assert RECORDS[2].tpot_s is None  # one token: no TPOT
    bad = RECORDS[3]
    assert not bad.ok and bad.e2e_s is None and bad.ttft_s is None and bad.normalized_latency_s is None


def test_per_model_and_overall_metrics():
    m = compute_metrics(RECORDS, ALONE, slo_scales=(2, 5))
    assert m.duration_s == pytest.approx(3.9)
    a, b, o = m.per_model["A"], m.per_model["B"], m.overall
    assert list(m.per_model) == ["A", "B"]

    assert (a.num_requests, a.num_completed, a.num_failed) == (2, 2, 0)
    assert a.request_throughput == pytest.approx(2 / 3.9)
    assert a.output_throughput == pytest.approx(16 / 3.9)
    assert a.ttft.mean == pytest.approx(0.2) and a.ttft.p50 == pytest.approx(0.1) and a.ttft.p99 == pytest.approx(0.3)
    assert a.tpot.mean == pytest.approx((0.1 + 0.25) / 2)
    assert a.e2e.mean == pytest.approx(1.2) and a.e2e.p50 == pytest.approx(1.1) and a.e2e.p90 == pytest.approx(1.3)
    assert a.normalized_latency_s == pytest.approx((0.1 + 0.26) / 2)
    # alone: r0 = .05 + .1 + 10*.05 = .65 (E2E 1.1), r1 = .05 + .05 + 4*.05 = .3 (E2E 1.3)
    assert a.slo_attainment == {2.0: pytest.approx(0.5), 5.0: pytest.approx(1.0)}

    assert (b.num_requests, b.num_completed, b.num_failed) == (3, 2, 1)
    assert b.output_tokens == 5 and b.input_tokens == 20
    assert b.ttft.mean == pytest.approx(0.375)
    assert b.tpot.count == 1 and b.tpot.mean == pytest.approx(1.4 / 3)
    assert b.normalized_latency_s == pytest.approx((0.25 + 0.475) / 2)
    # alone: r2 = .1 (E2E .25: ratio 2.5), r4 = .4 (E2E 1.9: ratio 4.75), r3 failed = miss
    assert b.slo_attainment == {2.0: pytest.approx(0.0), 5.0: pytest.approx(2 / 3)}

    assert (o.num_requests, o.num_completed, o.num_failed) == (5, 4, 1)
    assert o.request_throughput == pytest.approx(4 / 3.9)
    assert o.output_throughput == pytest.approx(21 / 3.9)
    assert o.e2e.mean == pytest.approx((1.1 + 1.3 + 0.25 + 1.9) / 4)
    assert o.e2e.p50 == pytest.approx(1.1) and o.e2e.p90 == pytest.approx(1.9) and o.tail_latency_s == pytest.approx(1.9)
    assert o.normalized_latency_s == pytest.approx((0.1 + 0.26 + 0.25 + 0.475) / 4)
    assert o.slo_attainment == {2.0: pytest.approx(1 / 5), 5.0: pytest.approx(4 / 5)}
    assert m.send_lag.count == 5 and m.send_lag.mean == 0.0

    text = format_table(m, (2.0, 5.0))
    assert "overall" in text and "SLO@5" in text and "80.0%" in text


def test_slo_attainment_needs_a_baseline_for_completed_requests_only():
    only_a = {"A": ALONE["A"]}
    m = compute_metrics(RECORDS, only_a, slo_scales=(5,))
    assert m.per_model["A"].slo_attainment == {5.0: pytest.approx(1.0)}
    assert m.per_model["B"].slo_attainment is None
    assert m.overall.slo_attainment is None
    exact = rec(0, "C", 0.0, 0.25, 0.5, 1)  # E2E 0.5 = 2 x alone 0.25: "<=" counts it
    assert slo_attainment([exact], {"C": AloneLatency(0.25, 0.0, 0.0)}, (2, 1.5)) == {2.0: 1.0, 1.5: 0.0}
    failed_only = [RECORDS[3]]
    assert slo_attainment(failed_only, {}, (5,)) == {5.0: 0.0}
    assert compute_metrics(RECORDS, ALONE, slo_scales=()).overall.slo_attainment is None


def test_metrics_use_usage_token_counts_and_explicit_duration():
    r = RequestRecord(index=0, model="A", input_len=8, output_len=3, scheduled_s=0.0, sent_s=0.1,
                      first_token_s=0.3, finish_s=1.1, tokens_in=9, tokens_out=5)
    m = compute_metrics([r], {"A": AloneLatency(0.0, 0.01, 0.1)}, (2,), duration_s=2.0)
    assert m.overall.output_throughput == pytest.approx(2.5)
    assert m.overall.tpot.mean == pytest.approx(0.8 / 4)
    # alone latency uses the served counts: 9 * .01 + 4 * .1 = .49; E2E 1.0 > 2 * .49
    assert m.overall.slo_attainment == {2.0: 0.0}
    assert m.send_lag.mean == pytest.approx(0.1)
    with pytest.raises(ValueError):
        compute_metrics([])
