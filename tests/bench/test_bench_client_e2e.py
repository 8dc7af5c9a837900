"""The load client end to end, against the fake streaming server in conftest.py (127.0.0.1)."""

from __future__ import annotations

import asyncio
import csv
import json

import pytest

from seallm.bench.baseline import AloneOverride
from seallm.bench.calibrate import CalibrationConfig
from seallm.bench.client import ClientConfig, replay
from seallm.bench.config import BenchConfig
from seallm.bench.prompts import TokenIdPrompts
from seallm.bench.runner import run_benchmark
from seallm.bench.workload import BenchRequest

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _client(srv, **kw) -> ClientConfig:
    return ClientConfig(base_url=srv.base_url, progress=False, **kw)


def test_replay_records_tokens_timestamps_and_errors(fake_server, tmp_path):
    reqs = [
        BenchRequest("a", 0.00, 20, 5),
        BenchRequest("b", 0.05, 100, 12),
        BenchRequest("broken", 0.10, 5, 5),
        BenchRequest("dropper", 0.10, 6, 8),
        BenchRequest("nousage", 0.12, 7, 4),
        BenchRequest("a", 0.20, 300, 1),
    ]
    cfg = BenchConfig(workload=reqs, client=_client(fake_server), output_dir=str(tmp_path / "out"),
                      slo_scales=(5.0, 10.0), alone={"*": AloneOverride(0.001, 1e-5, 0.001)})
    res = run_benchmark(cfg)
    recs = {(r.index): r for r in res.records}
    assert len(res.records) == 6 and [r.index for r in res.records] == list(range(6))
    assert res.calibration_records == ()  # every coefficient was given

    # what the server received: exact token-id prompts and the streaming options
    bodies = sorted(fake_server.bodies, key=lambda b: (b["model"], len(b["prompt"])))
    assert len(bodies) == 6
    for b in bodies:
        assert b["stream"] is True and b["ignore_eos"] is True
        assert b["stream_options"] == {"include_usage": True}
        assert all(isinstance(t, int) and 10 <= t < 500 for t in b["prompt"])
    sent = {(b["model"], len(b["prompt"]), b["max_tokens"]) for b in fake_server.bodies}
    assert sent == {(r.model, r.input_len, r.output_len) for r in reqs}

    for i in (0, 1, 4, 5):
        r = recs[i]
        assert r.ok, r.error
        assert r.tokens_out == reqs[i].output_len and r.tokens_in == reqs[i].input_len
        assert len(r.token_times_s) == reqs[i].output_len
        assert r.scheduled_s <= r.sent_s < r.first_token_s <= r.finish_s
        assert r.sent_s - r.scheduled_s < 0.25  # open loop: sent on schedule
        assert list(r.token_times_s) == sorted(r.token_times_s)
        assert r.token_times_s[0] == r.first_token_s and r.token_times_s[-1] <= r.finish_s
        assert r.finish_reason == "length"
    assert recs[1].tpot_s >= 0.003 * 0.9  # the server waits 3 ms between tokens
    assert recs[1].ttft_s >= 0.005 + 100 * 0.0001 - 1e-3
    assert recs[5].tpot_s is None and recs[5].tokens_out == 1
    assert recs[4].tokens_out == 4  # no usage chunk: counted chunks

    assert recs[2].error.startswith("HTTP 500") and not recs[2].ok
    assert recs[3].error is not None and not recs[3].ok
    assert res.metrics.overall.num_failed == 2 and res.metrics.per_model["broken"].num_failed == 1
    assert res.metrics.per_model["broken"].slo_attainment == {5.0: 0.0, 10.0: 0.0}

    # files
    out = tmp_path / "out"
    names = {p.split("/")[-1] for p in res.files}
    assert names == {"summary.json", "requests.csv", "e2e_cdf.png", "ttft_cdf.png", "per_model.png"}
    for png in ("e2e_cdf.png", "ttft_cdf.png", "per_model.png"):
        data = (out / png).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000
    summary = json.loads((out / "summary.json").read_text())
    assert summary["overall"]["num_requests"] == 6 and summary["overall"]["num_failed"] == 2
    assert set(summary["per_model"]) == {"a", "b", "broken", "dropper", "nousage"}
    assert summary["per_model"]["a"]["e2e"]["p99"] == pytest.approx(res.metrics.per_model["a"].e2e.p99)
    assert set(summary["overall"]["slo_attainment"]) == {"5", "10"}
    assert summary["config"]["workload"] == {"type": "requests", "num_requests": 6}
    assert summary["alone_latency"]["a"]["tpot_s"] == 0.001
    with open(out / "requests.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6
    assert rows[2]["error"].startswith("HTTP 500") and rows[2]["e2e_s"] == ""
    assert int(rows[1]["tokens_out"]) == 12 and float(rows[1]["e2e_s"]) == pytest.approx(recs[1].e2e_s, abs=1e-6)


def test_calibration_measures_served_alone_latency(make_fake_server):
    # Latencies large against scheduling noise on 2 shared cores (at 4 ms per token a busy
    # machine once doubled the measured TPOT).
    srv = make_fake_server(ttft_base=0.05, ttft_per_token=0.001, tpot=0.02)
    reqs = [BenchRequest("a", 0.01 * i, n, 8) for i, n in enumerate((50, 100, 200, 300, 400))]
    res = run_benchmark(BenchConfig(workload=reqs, client=_client(srv),
                                    calibration=CalibrationConfig(requests_per_model=4, output_len=6)))
    assert len(res.calibration_records) == 4
    assert all(r.ok and r.tokens_out == 6 for r in res.calibration_records)
    a = res.alone["a"]
    assert a.samples == 4
    assert a.tpot_s == pytest.approx(0.02, rel=0.5)
    assert a.ttft_per_token_s == pytest.approx(0.001, rel=0.5)
    assert a.ttft(300) == pytest.approx(0.05 + 0.3, rel=0.5)
    # calibration (1 warm-up + 4) went one at a time, before the 5 replayed requests
    assert len(srv.bodies) == 10
    assert res.metrics.overall.slo_attainment is not None
    assert res.files == ()  # no output_dir: nothing written


def test_max_concurrency_and_api_key(make_fake_server):
    srv = make_fake_server(api_key="sekret", tpot=0.01)
    reqs = [BenchRequest("a", 0.0, 5, 6) for _ in range(6)]
    recs = asyncio.run(replay(reqs, TokenIdPrompts(), _client(srv, api_key="sekret", max_concurrency=2)))
    assert all(r.ok for r in recs)
    assert srv.max_inflight == 2
    waited = sorted(r.sent_s - r.scheduled_s for r in recs)
    assert waited[-1] > 0.04  # the last ones queued in the client
    bad = asyncio.run(replay(reqs[:1], TokenIdPrompts(), _client(srv, api_key="wrong")))
    assert bad[0].error.startswith("HTTP 401")


def test_run_timeout_records_unfinished_and_unsent_requests(fake_server):
    reqs = [BenchRequest("a", 0.0, 5, 3), BenchRequest("slow", 0.0, 5, 3), BenchRequest("a", 5.0, 5, 3)]
    recs = asyncio.run(replay(reqs, TokenIdPrompts(), _client(fake_server, timeout_s=0.5)))
    assert recs[0].ok
    assert recs[1].error == "cancelled: run timeout" and recs[1].sent_s is not None
    assert recs[2].error == "not sent: run timeout" and recs[2].sent_s is None


def test_unreachable_server_is_recorded_not_raised():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    recs = asyncio.run(replay([BenchRequest("a", 0.0, 5, 3)], TokenIdPrompts(),
                              ClientConfig(base_url=f"http://127.0.0.1:{port}", progress=False)))
    assert not recs[0].ok and "Error" in recs[0].error
