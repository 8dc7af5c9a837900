"""``seallm generate`` and argument errors, run as a user would."""

from __future__ import annotations

import subprocess
import sys


def _run(*args):
    return subprocess.run([sys.executable, "-m", "seallm.cli", *args], capture_output=True, text=True, timeout=300)


def test_generate_prints_the_completion(checkpoints):
    from seallm import LLM, SamplingParams

    r = _run("generate", "--model", f"a={checkpoints['llama']}", "--prompt", "Hello there", "--max-tokens", "12",
             "--ignore-eos")
    assert r.returncode == 0, r.stderr
    want = LLM(models={"a": checkpoints["llama"]}, kv_cache_memory="4MiB").generate(
        ["Hello there"], SamplingParams(max_tokens=12, temperature=0, ignore_eos=True))[0].text
    assert r.stdout == want + "\n"


def test_generate_reports_bad_checkpoint(tmp_path):
    r = _run("generate", "--model", f"a={tmp_path}", "--prompt", "x")
    assert r.returncode == 2
    assert "config.json" in r.stderr and "Traceback" not in r.stderr


def test_bad_model_flag():
    r = _run("generate", "--model", "nopath", "--prompt", "x")
    assert r.returncode != 0 and "NAME=PATH" in r.stderr


def test_simulate_compares_policies_on_a_trace(checkpoints, tmp_path):
    import json

    out = tmp_path / "sim.json"
    r = _run("simulate", "--model", f"chat={checkpoints['llama']}", "--model", f"code={checkpoints['qwen2']}",
             "--kv-cache-memory", "2MiB", "--scheduling-policy", "fcfs", "seallm", "--preemption-mode", "swap",
             "--device", "a100-80gb", "--trace", "chat=chat", "--trace", "code=code", "--window-start", "660",
             "--duration", "5", "--length-scale", "0.25", "--output", str(out))
    assert r.returncode == 0, r.stderr
    assert "== policy fcfs" in r.stdout and "== policy seallm" in r.stdout and "SLO@5" in r.stdout
    res = json.loads(out.read_text())
    for pol in ("fcfs", "seallm"):
        p = res["policies"][pol]
        assert p["normalized_latency_s"] > 0 and p["iterations"] > 0 and 0 <= p["slo_attainment"]["5.0"] <= 1
        assert p["model_loads"] == 0
    step = tmp_path / "step.json"  # step by step: the same results
    r = _run("simulate", "--model", f"chat={checkpoints['llama']}", "--model", f"code={checkpoints['qwen2']}",
             "--kv-cache-memory", "2MiB", "--scheduling-policy", "fcfs", "seallm", "--preemption-mode", "swap",
             "--device", "a100-80gb", "--trace", "chat=chat", "--trace", "code=code", "--window-start", "660",
             "--duration", "5", "--length-scale", "0.25", "--output", str(step), "--no-fast-forward")
    assert r.returncode == 0, r.stderr
    for pol, p in json.loads(step.read_text())["policies"].items():
        assert p["fast_forwarded_iterations"] == 0 and res["policies"][pol]["fast_forwarded_iterations"] > 0
        for key in ("normalized_latency_s", "p99_e2e_s", "slo_attainment", "iterations", "preemptions"):
            assert p[key] == res["policies"][pol][key], key


def test_simulate_loads_models_on_demand(checkpoints, tmp_path):
    import json

    out = tmp_path / "sim.json"
    r = _run("simulate", "--model", f"chat={checkpoints['llama']}", "--model", f"code={checkpoints['qwen2']}",
             "--kv-cache-memory", "2MiB", "--max-resident-models", "1", "--residency-policy", "lru",
             "--disk-bandwidth", "1e8", "--device", "a100-80gb", "--trace", "chat=chat", "--trace", "code=code",
             "--window-start", "660", "--duration", "5", "--length-scale", "0.25", "--output", str(out))
    assert r.returncode == 0, r.stderr
    p = json.loads(out.read_text())["policies"]["seallm"]
    assert p["model_loads"] >= 1 and "model loads" in r.stdout


def test_simulate_reports_bad_input(checkpoints, tmp_path):
    r = _run("simulate", "--trace", "chat=x")
    assert r.returncode == 2 and "--model" in r.stderr
    r = _run("simulate", "--model", f"a={checkpoints['llama']}", "--trace", "chat=other", "--duration", "5")
    assert r.returncode == 2 and "does not serve" in r.stderr and "Traceback" not in r.stderr
    bad = tmp_path / "p.json"
    bad.write_text("{}")
    r = _run("simulate", "--model", f"a={checkpoints['llama']}", "--cost-profile", f"a={bad}", "--trace", "chat=a")
    assert r.returncode == 2 and "not a seallm cost profile" in r.stderr
