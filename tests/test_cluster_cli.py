"""`seallm simulate --cluster` and `seallm place` end to end (torch-free)."""

from __future__ import annotations

import json

import pytest

from seallm.cli import main
from seallm.deploy import load_deployment

CLUSTER = """\
cluster: {device: h100, num_nodes: 1, devices_per_node: 4}
services:
  - {name: chat, arch: Llama-3.1-8B, path: /ckpt/llama}
  - {name: code, arch: Qwen2.5-7B}
  - {name: big, arch: Qwen2.5-14B}
workload: {synthetic: {rate: 4}, duration_s: 15, alpha: 1.0}
slo_scales: [2, 5]
"""


def test_simulate_cluster_compares_every_system(tmp_path, capsys):
    f = tmp_path / "c.yaml"
    f.write_text(CLUSTER)
    out = tmp_path / "r.json"
    rc = main(["simulate", "--cluster", str(f), "--no-progress", "--output", str(out), "--plot-dir",
               str(tmp_path / "plots"), "--sweep-rate-scales", "2"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "rate scale 1:" in text and "rate scale 2:" in text and "muxserve" in text
    res = json.loads(out.read_text())
    assert set(res["systems"]) == {"seallm", "vllm", "alpaserve", "muxserve"}
    for s in res["systems"].values():
        assert s["normalized_latency_s"] > 0 and set(s["slo_attainment"]) == {"2.0", "5.0"} and s["p99_e2e_s"] > 0
    assert set(res["sweep"]) == {"1.0", "2.0"}
    assert (tmp_path / "plots" / "latency_vs_rate.png").exists() and (tmp_path / "plots" / "slo_attainment.png").exists()


def test_simulate_cluster_step_by_step_gives_the_same_results(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text(CLUSTER)
    res = {}
    for flag in ([], ["--no-fast-forward"]):
        out = tmp_path / f"r{len(flag)}.json"
        assert main(["simulate", "--cluster", str(f), "--no-progress", "--systems", "seallm", "vllm",
                     "--output", str(out), *flag]) == 0
        res[bool(flag)] = json.loads(out.read_text())["systems"]
    for name in ("seallm", "vllm"):
        fast, step = res[False][name], res[True][name]
        assert fast["fast_forwarded_iterations"] > 0 and step["fast_forwarded_iterations"] == 0
        for key in ("normalized_latency_s", "p99_e2e_s", "p99_ttft_s", "slo_attainment", "iterations", "busy_s",
                    "per_model"):
            assert fast[key] == step[key], key


def test_simulate_cluster_rejects_bad_input(tmp_path, capsys):
    f = tmp_path / "c.yaml"
    f.write_text("mix: {NoSuchModel: 1}\n")
    assert main(["simulate", "--cluster", str(f), "--no-progress"]) == 2
    assert "catalog" in capsys.readouterr().err
    f.write_text(CLUSTER)
    assert main(["simulate", "--cluster", str(f), "--systems", "sglang", "--no-progress"]) == 2
    assert main(["simulate", "--cluster", str(f), "--models", "a", "--no-progress"]) == 2
    assert main(["simulate", "--no-progress"]) == 2  # neither a workload nor a cluster


@pytest.mark.parametrize("algorithm", ["seallm", "dedicated"])
def test_place_prints_and_writes_a_deployment_file(tmp_path, capsys, algorithm):
    f = tmp_path / "c.yaml"
    f.write_text(CLUSTER)
    dep = tmp_path / "dep.yaml"
    assert main(["place", "--config", str(f), "--algorithm", algorithm, "--output", str(dep)]) == 0
    text = capsys.readouterr().out
    assert f"{algorithm} placement of 3 services" in text and "chat" in text
    import yaml

    raw = yaml.safe_load(dep.read_text())
    assert [m["name"] for m in raw["models"]] == ["chat", "code", "big"]
    assert raw["models"][0]["path"] == "/ckpt/llama"
    placed = sorted({m for r in raw["replicas"] for m in r["models"]})
    assert placed == ["big", "chat", "code"]
    if all(r["tensor_parallel_size"] == 1 for r in raw["replicas"]):
        cfg = load_deployment(str(dep))
        assert [r.name for r in cfg.replicas] == [r["name"] for r in raw["replicas"]]
    else:  # the engine serves groups of one device only: a clear refusal, not a wrong deployment
        with pytest.raises(ValueError, match="tensor parallelism"):
            load_deployment(str(dep))


def test_place_reports_bad_input(tmp_path, capsys):
    assert main(["place", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_deployment_refuses_tensor_parallel_groups_clearly(tmp_path):
    f = tmp_path / "d.yaml"
    f.write_text("models: [{name: a, path: x}]\nreplicas: [{name: g0, models: [a], tensor_parallel_size: 2}]\n")
    with pytest.raises(ValueError, match="g0.*tensor parallelism"):
        load_deployment(str(f))
    f.write_text("models: [{name: a, path: x}]\ntensor_parallel_size: 0\n")
    with pytest.raises(ValueError, match="positive integer"):
        load_deployment(str(f))


def test_simulate_cluster_with_replacement_modes(tmp_path, capsys):
    f = tmp_path / "c.yaml"
    f.write_text(CLUSTER.replace("alpha: 1.0}", "alpha: 1.5, drift_period_s: 5}")
                 + "replacement: {mode: fixed, interval_s: 4}\n")
    out = tmp_path / "r.json"
    rc = main(["simulate", "--cluster", str(f), "--no-progress", "--output", str(out),
               "--systems", "seallm@none", "seallm@adaptive", "vllm"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "re-placements" in text and "(" in text.splitlines()[5]  # ratios against seallm@none
    res = json.loads(out.read_text())["systems"]
    assert set(res) == {"seallm@none", "seallm@adaptive", "vllm"}
    assert res["seallm@none"]["replacement_checks"] == 0
    assert res["seallm@adaptive"]["replacement_checks"] > 0
    assert res["vllm"]["replacement_checks"] == 3  # the file's fixed mode: at 4, 8, 12 s
    assert len(res["vllm"]["switches"]) == res["vllm"]["replacement_switches"]
    assert main(["simulate", "--cluster", str(f), "--no-progress", "--systems", "seallm@often"]) == 2
    assert main(["simulate", "--cluster", str(f), "--no-progress", "--replacement", "fixed",
                 "--replacement-interval", "-1"]) == 2
    f.write_text(CLUSTER + "replacement: {mode: adaptive, every: 3}\n")
    assert main(["simulate", "--cluster", str(f), "--no-progress"]) == 2
    assert "replacement" in capsys.readouterr().err
