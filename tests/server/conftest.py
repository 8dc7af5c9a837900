"""A live ``seallm serve`` subprocess with two tiny models of different architectures."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from seallm.demo import wait_healthy


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(models: dict[str, str], *extra: str, log_path: str | None = None):
    port = free_port()
    cmd = [sys.executable, "-m", "seallm.cli", "serve", "--port", str(port), "--kv-cache-memory", "64MiB",
           "--log-level", "warning"]
    for name, path in models.items():
        cmd += ["--model", f"{name}={path}"]
    cmd += list(extra)
    log = open(log_path or os.devnull, "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, proc, timeout=180)
    except RuntimeError:
        proc.kill()
        raise
    return proc, base


def stop_server(proc: subprocess.Popen) -> int:
    """Ctrl-C the server; returns its exit code (0 after a clean shutdown)."""
    proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


@pytest.fixture(scope="session")
def server(checkpoints, tmp_path_factory):
    log = str(tmp_path_factory.mktemp("server") / "server.log")
    proc, base = start_server({"llama": checkpoints["llama"], "qwen2": checkpoints["qwen2"]}, log_path=log)
    yield base
    assert stop_server(proc) == 0, open(log).read()[-3000:]


@pytest.fixture()
def client(server):
    import openai

    return openai.OpenAI(base_url=server + "/v1", api_key="unused", max_retries=0, timeout=60)


def kv_pages_used(base: str) -> dict[str, float]:
    """``seallm:kv_cache_pages_used`` per model, read from /metrics."""
    import httpx

    out = {}
    for line in httpx.get(base + "/metrics").text.splitlines():
        if line.startswith("seallm:kv_cache_pages_used{"):
            model = line.split('model="')[1].split('"')[0]
            out[model] = float(line.rsplit(" ", 1)[1])
    return out


def wait_for_no_pages(base: str, timeout: float = 20.0) -> None:
    deadline = time.time() + timeout
    used = None
    while time.time() < deadline:
        used = kv_pages_used(base)
        if used and all(v == 0 for v in used.values()):
            return
        time.sleep(0.3)
    raise AssertionError(f"KV pages still allocated: {used}")
