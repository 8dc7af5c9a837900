"""Helpers shared by the benchmarks: cached random checkpoints and result files."""

from __future__ import annotations

import json
import os
import platform
import socket
import time
from typing import Any

CACHE = os.environ.get("SEALLM_BENCH_CACHE", os.path.expanduser("~/.cache/seallm/bench"))

# ~125M parameters: the workload of the engine issue.
LLAMA_125M = dict(hidden_size=768, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=12,
                  num_key_value_heads=4, vocab_size=32000, max_position_embeddings=2048)


def checkpoint(name: str, arch: str, **overrides: Any) -> str:
    """A random-weight checkpoint written once under the cache folder."""
    from seallm.models.random_checkpoint import write_random_checkpoint

    path = os.path.join(CACHE, name)
    if not os.path.exists(os.path.join(path, "config.json")):
        write_random_checkpoint(path, arch, tokenizer=False, **overrides)
    return path


def write_result(name: str, result: dict[str, Any], out_dir: str = "benchmarks/results") -> str:
    """Write ``result`` with machine info to ``out_dir/name.json``; returns the path."""
    return write_json(os.path.join(out_dir, f"{name}.json"), result)


def write_json(path: str, result: dict[str, Any]) -> str:
    """Write ``result`` with machine info and a timestamp to ``path`` (folders created);
    returns the path. Torch's version and threads are recorded when torch is imported
    already (torch-free benchmarks never import it)."""
    import sys

    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    machine = dict(platform=platform.platform(), processor=platform.processor(), cpus=os.cpu_count())
    torch = sys.modules.get("torch")
    if torch is not None:
        machine.update(torch=torch.__version__, threads=torch.get_num_threads())
    result = dict(result, machine=machine, timestamp=time.strftime("%Y-%m-%dT%H:%M:%S"))
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
    return path


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_deployment(cfg: dict, timeout: float = 300.0):
    """Start ``seallm serve`` on the deployment ``cfg`` (a deployment-file mapping, with its
    ``port``) written to a temporary YAML file; returns ``(process, base URL, file path)``
    once it is healthy."""
    import subprocess
    import sys
    import tempfile

    import yaml

    from seallm.demo import wait_healthy

    fd, path = tempfile.mkstemp(suffix=".yaml")
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(cfg, f)
    proc = subprocess.Popen([sys.executable, "-m", "seallm.cli", "serve", "--config", path, "--log-level", "warning"])
    base = f"http://127.0.0.1:{cfg['port']}"
    wait_healthy(base, proc, timeout=timeout)
    return proc, base, path


def stop_deployment(proc, cfg_path: str, timeout: float = 30.0) -> None:
    """Ctrl-C a server from :func:`serve_deployment` (killed after ``timeout`` s) and remove its file."""
    import signal
    import subprocess

    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
    os.unlink(cfg_path)
