"""``seallm bench`` argument parsing, and a tiny end-to-end CLI run against the fake server."""

from __future__ import annotations

import argparse
import json

import pytest

from seallm.bench.cli import add_bench_parser, config_from_args, run_bench
from seallm.bench.workload import AzureWorkload, SyntheticWorkload


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="seallm")
    sub = parser.add_subparsers(dest="command", required=True)
    add_bench_parser(sub)
    return parser.parse_args(["bench", *argv])


def test_trace_flags_build_an_azure_workload():
    args = parse(["--trace", "chat=modelA", "--trace", "code=modelB", "--window-start", "60", "--duration", "120",
                  "--rate-scale", "0.5", "--length-scale", "0.25", "--max-input-len", "400", "--max-output-len", "64",
                  "--alone-tpot", "0.02", "--alone-ttft-per-token", "modelA=0.0001", "--slo-scales", "2", "8",
                  "--max-concurrency", "16", "--api-key", "k", "--timeout", "30", "--seed", "3", "--no-progress"])
    assert args.func is run_bench
    cfg = config_from_args(args)
    w = cfg.workload
    assert isinstance(w, AzureWorkload)
    assert w.traces == (("chat", "modelA"), ("code", "modelB"))
    assert (w.window_start_s, w.duration_s, w.rate_scale) == (60.0, 120.0, 0.5)
    assert (w.lengths.scale, w.lengths.max_input_len, w.lengths.max_output_len) == (0.25, 400, 64)
    assert cfg.slo_scales == (2.0, 8.0) and cfg.seed == 3
    assert cfg.client.max_concurrency == 16 and cfg.client.api_key == "k" and cfg.client.timeout_s == 30.0
    assert cfg.client.progress is False and cfg.client.base_url == "http://127.0.0.1:8000"
    assert cfg.alone["*"].tpot_s == 0.02 and cfg.alone["modelA"].ttft_per_token_s == 0.0001
    assert cfg.output_dir.startswith("results/bench-")
    assert cfg.prompts.token_id_low == 10 and cfg.prompts.token_id_high == 500


def test_models_flags_build_a_synthetic_workload():
    args = parse(["--models", "m1", "m2", "--rate", "4", "--alpha", "0.9", "--arrival", "gamma", "--cv", "2",
                  "--num-requests", "100", "--length-dist", "arxiv", "--length-dist", "m2=bwb",
                  "--token-id-range", "3", "200", "--no-calibrate"])
    cfg = config_from_args(args)
    w = cfg.workload
    assert isinstance(w, SyntheticWorkload)
    assert w.models == ("m1", "m2") and w.total_rate == 4.0 and w.alpha == 0.9
    assert (w.arrival, w.cv, w.num_requests) == ("gamma", 2.0, 100)
    assert w.length_dist_for("m1") == "arxiv" and w.length_dist_for("m2") == "bwb"
    assert (cfg.prompts.token_id_low, cfg.prompts.token_id_high) == (3, 200)
    assert cfg.calibration.enabled is False


def test_bad_arguments_return_2(capsys):
    assert run_bench(parse(["--models", "m1"])) == 2  # no --rate
    assert "--rate" in capsys.readouterr().err
    assert run_bench(parse(["--trace", "chatmodelA"])) == 2
    assert run_bench(parse(["--trace", "nosuch=A", "--no-calibrate"])) == 2
    assert run_bench(parse(["--trace", "chat=A", "--alone-tpot", "A=-1"])) == 2
    assert run_bench(parse(["--trace", "chat=A", "--rate", "3"])) == 2
    assert run_bench(parse(["--models", "m", "--rate", "3", "--duration", "1", "--window-start", "5"])) == 2
    assert run_bench(parse(["--models", "m", "--rate", "3"])) == 2  # neither --duration nor --num-requests
    with pytest.raises(SystemExit):
        parse(["--trace", "chat=A", "--models", "x"])  # mutually exclusive


def test_cli_replays_a_trace_window_against_the_server(fake_server, tmp_path, capsys):
    out = tmp_path / "run"
    args = parse(["--trace", "chat=modelA", "--trace", "code=modelB", "--window-start", "77", "--duration", "1.5",
                  "--rate-scale", "2", "--max-input-len", "64", "--max-output-len", "4",
                  "--base-url", fake_server.base_url, "--no-progress", "--output-dir", str(out),
                  "--calibration-requests", "2", "--calibration-output-len", "3"])
    assert run_bench(args) == 0
    text = capsys.readouterr().out
    assert "overall" in text and "modelA" in text and "modelB" in text
    summary = json.loads((out / "summary.json").read_text())
    n = summary["overall"]["num_requests"]
    assert n > 3 and summary["overall"]["num_failed"] == 0
    assert summary["config"]["workload"]["type"] == "azure"
    assert summary["alone_latency"]["modelA"]["samples"] == 2
    assert set(summary["overall"]["slo_attainment"]) == {"5", "10"}
    assert (out / "per_model.png").exists() and (out / "calibration.csv").exists()
    replayed = [b for b in fake_server.bodies if b["max_tokens"] <= 4 and len(b["prompt"]) <= 64]
    assert len(replayed) >= n
