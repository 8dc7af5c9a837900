"""The simulator against a live ``seallm serve`` over HTTP on the same requests, with a loose
bound (the real bound and its measurement: ``benchmarks/sim_fidelity.py``)."""

from __future__ import annotations

import json

import yaml

from seallm.bench import run_benchmark
from seallm.bench.config import BenchConfig, CalibrationConfig, ClientConfig
from seallm.bench.workload import LengthConfig, SyntheticWorkload
from seallm.cli import build_parser
from seallm.simulate import sim_config_from_args
from seallm.sim.runner import run_simulation
from tests.server.conftest import start_server, stop_server


def test_simulated_latency_tracks_a_live_server(checkpoints, tmp_path):
    profiles = tmp_path / "profiles.json"
    dep = tmp_path / "dep.yaml"
    dep.write_text(yaml.safe_dump({"models": [{"name": "llama", "path": checkpoints["llama"]}],
                                   "scheduling_policy": "seallm", "kv_cache_memory": "64MiB",
                                   "profiles_path": str(profiles)}))
    work = SyntheticWorkload(models=("llama",), total_rate=4.0, duration_s=8.0,
                             lengths=LengthConfig(max_input_len=96, max_output_len=48))

    def served(seed: int):
        proc, base = start_server({}, "--config", str(dep))
        try:
            res = run_benchmark(BenchConfig(workload=work, client=ClientConfig(base_url=base, progress=False),
                                            calibration=CalibrationConfig(enabled=False), seed=seed))
        finally:
            assert stop_server(proc) == 0  # a clean stop saves the profiles
        return res.metrics.overall

    served(seed=1)  # warm-up: the server learns its step times and overheads
    saved = json.loads(profiles.read_text())["llama"]
    assert saved["cost_model"] and saved["iteration_overhead_s"] >= 0 and saved["ingest_delay_s"] >= 0
    live = served(seed=0)
    args = build_parser().parse_args(["simulate", "--config", str(dep), "--device", "cpu",
                                      "--slo-scales", "5"])
    _, (cfg,) = sim_config_from_args(args)
    assert cfg.ingest_delay_s["llama"] > 0
    sim = run_simulation(cfg, work).metrics.overall
    assert sim.num_completed == live.num_completed == live.num_requests
    # loose: within a factor of two in mean and median end-to-end latency at this light load
    # (of ~30 requests the P99 is the slowest one, often a fresh server's first: not compared)
    assert 0.5 < sim.e2e.mean / live.e2e.mean < 2.0, (sim.e2e.mean, live.e2e.mean)
    assert 0.5 < sim.e2e.p50 / live.e2e.p50 < 2.0, (sim.e2e.p50, live.e2e.p50)
