"""The demo deployment (two small random-weight models) and ``seallm demo``, the main job:
serve the demo over HTTP and replay a window of the real Azure chat and code traces.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

DEMO_CACHE = os.environ.get("SEALLM_DEMO_CACHE", os.path.expanduser("~/.cache/seallm/demo"))

# Two architectures, one pool: a Llama-style and a Qwen2-style model (QKV bias), random weights.
DEMO_MODELS = {
    "demo-llama": ("llama", dict(hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=8,
                                 num_key_value_heads=4, max_position_embeddings=4096, vocab_size=512)),
    "demo-qwen2": ("qwen2", dict(hidden_size=192, intermediate_size=512, num_hidden_layers=4, num_attention_heads=6,
                                 num_key_value_heads=2, max_position_embeddings=4096, vocab_size=512)),
}


def ensure_demo_checkpoints(cache: str = DEMO_CACHE) -> dict[str, str]:
    """Write the demo checkpoints once (config, safetensors, tokenizer with a chat template);
    returns name -> folder."""
    from seallm.models.random_checkpoint import write_random_checkpoint

    out = {}
    for i, (name, (arch, kw)) in enumerate(DEMO_MODELS.items()):
        path = os.path.join(cache, name)
        if not os.path.exists(os.path.join(path, "tokenizer.json")):
            write_random_checkpoint(path, arch, seed=100 + i, **kw)
        out[name] = path
    return out


def wait_healthy(base_url: str, proc: subprocess.Popen | None, timeout: float = 600.0) -> None:
    """Poll ``/health`` until it answers 200.

    Raises:
        RuntimeError: the server process exited or did not become healthy in time.
    """
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(base_url + "/health", timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        time.sleep(0.5)
    raise RuntimeError("the server did not become healthy in time")


def add_demo_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="serve the demo deployment and replay the Azure chat+code traces against it")
    p.add_argument("--port", type=int, default=8321)
    p.add_argument("--duration", type=float, default=90.0, help="seconds of trace to replay (default 90)")
    p.add_argument("--window-start", type=float, default=600.0, help="offset into the traces (s)")
    p.add_argument("--rate-scale", type=float, default=0.5, help="arrival-rate multiplier (default 0.5)")
    p.add_argument("--max-input-len", type=int, default=1024)
    p.add_argument("--max-output-len", type=int, default=128)
    p.add_argument("--scheduling-policy", default=None)
    p.add_argument("--output-dir", default=None, help="default: results/demo-<timestamp>")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    from seallm.bench.cli import add_bench_parser, run_bench

    base = f"http://127.0.0.1:{args.port}"
    out_dir = args.output_dir or os.path.join("results", time.strftime("demo-%Y%m%d-%H%M%S"))
    print("seallm demo: preparing the demo deployment (random weights, created once)...", flush=True)
    ensure_demo_checkpoints()
    cmd = [sys.executable, "-m", "seallm.cli", "serve", "--port", str(args.port)]
    if args.scheduling_policy:
        cmd += ["--scheduling-policy", args.scheduling_policy]
    server = subprocess.Popen(cmd)
    try:
        wait_healthy(base, server)
        parser = argparse.ArgumentParser(prog="seallm")
        add_bench_parser(parser.add_subparsers(dest="command"))
        bench_argv = ["bench", "--base-url", base, "--trace", "chat=demo-llama", "--trace", "code=demo-qwen2",
                      "--window-start", str(args.window_start), "--duration", str(args.duration),
                      "--rate-scale", str(args.rate_scale), "--max-input-len", str(args.max_input_len),
                      "--max-output-len", str(args.max_output_len), "--output-dir", out_dir]
        if args.no_progress:
            bench_argv.append("--no-progress")
        print("seallm demo: replaying the Azure LLM inference traces 2023 (chat -> demo-llama, "
              "code -> demo-qwen2) through the HTTP API...", flush=True)
        return int(run_bench(parser.parse_args(bench_argv)) or 0)
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
