"""Cost models: roofline sanity and max-affine fitting (torch-free), plus ``seallm profile``."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from seallm.cost import DEVICES, BatchShape, MaxAffineCostModel, ModelShape, RooflineCostModel, fit_max_affine

LLAMA_8B = ModelShape(num_layers=32, hidden_size=4096, intermediate_size=14336, num_heads=32, num_kv_heads=8,
                      head_dim=128, vocab_size=128256, dtype_bytes=2)


def test_roofline_regimes_and_devices():
    m = RooflineCostModel(LLAMA_8B, DEVICES["h100-sxm"])
    decode = m.step_time(BatchShape(num_tokens=8, num_context_tokens=8 * 1000, num_seqs=8, num_sampled=8))
    # Decode of 8 sequences is memory-bound: ~16 GB of bf16 weights at 3.35 TB/s is ~5 ms.
    assert 4e-3 < decode < 9e-3
    prefill = m.step_time(BatchShape(num_tokens=8192, num_context_tokens=8192, num_seqs=1, num_sampled=1,
                                     attention_pairs=8192 * 8193 // 2))
    assert prefill > 10 * decode  # compute-bound
    h200 = RooflineCostModel(LLAMA_8B, DEVICES["h200"])
    a100 = RooflineCostModel(LLAMA_8B, DEVICES["a100-80gb"])
    b = BatchShape(num_tokens=8, num_context_tokens=8000, num_seqs=8, num_sampled=8)
    assert h200.step_time(b) < m.step_time(b) < a100.step_time(b)  # bandwidth 4.8 > 3.35 > 2.0 TB/s
    more_ctx = BatchShape(num_tokens=8, num_context_tokens=800_000, num_seqs=8, num_sampled=8)
    assert m.step_time(more_ctx) > decode


def test_fit_recovers_a_known_max_affine_model():
    true = MaxAffineCostModel(((6.9e-5, 2e-7, 0.0248), (7.5e-5, 1e-7, 0.003)))
    samples = []
    for n in (1, 8, 32, 64, 128, 256, 512, 1024, 2048):
        for c in (0, 1000, 10_000, 50_000):
            b = BatchShape(n, c)
            samples.append((b, true.step_time(b)))
    model, report = fit_max_affine(samples)
    assert report.r2 > 0.999 and report.median_rel_error < 0.01 and report.num_test > 0
    assert MaxAffineCostModel.from_json(model.to_json()) == model
    assert model.max_tokens_within(0.1) == pytest.approx(true.max_tokens_within(0.1), rel=0.05)


def test_fit_needs_samples():
    with pytest.raises(ValueError):
        fit_max_affine([(BatchShape(1, 1), 0.1)])


def test_seallm_profile_cli(checkpoints, tmp_path):
    out = tmp_path / "p.json"
    r = subprocess.run([sys.executable, "-m", "seallm.cli", "profile", "--model", f"m={checkpoints['llama']}",
                        "--repeats", "1", "--kv-cache-memory", "64MiB", "--output", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    d = json.loads(out.read_text())
    assert d["cost_model"]["kind"] == "max_affine" and len(d["samples"]) >= 20
    assert all(s["seconds"] > 0 and s["roofline_s"] > 0 for s in d["samples"])
    assert "R2=" in r.stdout
