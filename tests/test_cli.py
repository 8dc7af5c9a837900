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
