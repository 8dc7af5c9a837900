"""Supervision of the engine process: a dead engine fails its requests with 503, is restarted
with backoff, and the server serves again; a permanently failing one ends in "failed"."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time

import httpx
import psutil

from seallm.server.engine_client import RestartPolicy
from tests.server.conftest import start_server, stop_server


def test_restart_policy_backoff_doubles_and_is_bounded_per_window():
    p = RestartPolicy(max_restarts=5, window_s=100.0, backoff_s=1.0, backoff_max_s=6.0)
    assert [p.next_delay(t) for t in (0, 1, 2, 3, 4)] == [1, 2, 4, 6, 6]
    assert p.next_delay(5) is None  # 5 restarts within 100 s: give up
    assert p.next_delay(100.5) == 6  # the first one left the window: one more allowed (4 still in it)
    assert p.next_delay(100.6) is None
    assert RestartPolicy(max_restarts=0).next_delay(0) is None


def _engine_procs(server) -> list[psutil.Process]:
    """The server's engine-core children (multiprocessing "spawn" children, not its helpers)."""
    out = []
    for c in psutil.Process(server.pid).children():
        try:
            cmd = " ".join(c.cmdline())
            if "spawn_main" in cmd and c.status() != psutil.STATUS_ZOMBIE:
                out.append(c)
        except psutil.NoSuchProcess:
            pass
    return out


def _engine(server) -> psutil.Process:
    procs = _engine_procs(server)
    assert len(procs) == 1, procs
    return procs[0]


def _ipc_paths(server) -> set[str]:
    """The ipc:// socket files the server has bound."""
    return {c.laddr for c in psutil.Process(server.pid).net_connections(kind="unix")
            if isinstance(c.laddr, str) and os.path.basename(c.laddr).startswith(("in-", "out-"))}


def _health(base: str) -> httpx.Response:
    r = httpx.get(base + "/health", timeout=10)
    assert r.headers["content-type"].startswith("application/json")
    return r


def _metric(base: str, name: str) -> float:
    for line in httpx.get(base + "/metrics", timeout=10).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in /metrics")


def _wait_health(base: str, status: str, timeout: float) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        r = _health(base)
        if r.json()["status"] == status:
            return r
        assert time.monotonic() < deadline, f"/health still {r.status_code} {r.text} after {timeout} s"
        time.sleep(0.1)


_GREEDY = {"model": "llama", "prompt": [5, 6, 7, 8, 9], "max_tokens": 8, "temperature": 0, "ignore_eos": True}


def test_kill_9_engine_mid_stream_fails_it_with_503_then_restarts(checkpoints, tmp_path):
    log = str(tmp_path / "server.log")
    server, base = start_server({"llama": checkpoints["llama"]}, log_path=log)
    try:
        h = _health(base)
        assert h.status_code == 200 and h.json() == {"status": "ok", "engine_restarts": 0}
        before = httpx.post(base + "/v1/completions", json=_GREEDY, timeout=60).json()
        models = httpx.get(base + "/v1/models", timeout=10).json()
        old = _engine(server)
        old_ipc = _ipc_paths(server)
        assert len(old_ipc) == 2 and all(os.path.exists(p) for p in old_ipc)

        body = {"model": "llama", "prompt": [3, 4, 5], "max_tokens": 1000, "ignore_eos": True, "stream": True}
        events, t_kill = [], None
        with httpx.stream("POST", base + "/v1/completions", json=body, timeout=30) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                if not line.startswith("data: "):
                    continue
                events.append(line[6:])
                if t_kill is None and len(events) >= 3:  # in flight: tokens are streaming
                    os.kill(old.pid, signal.SIGKILL)
                    t_kill = time.monotonic()
        assert t_kill is not None
        assert time.monotonic() - t_kill < 10  # the stream ended, no hang
        errors = [json.loads(e)["error"] for e in events if e != "[DONE]" and "error" in json.loads(e)]
        assert len(errors) == 1, events[-3:]
        assert errors[0]["code"] == 503 and errors[0]["type"] == "ServiceUnavailableError"
        assert "engine process died" in errors[0]["message"] and "SIGKILL" in errors[0]["message"]

        h = _health(base)
        assert h.status_code == 503
        assert h.json()["status"] == "restarting" and h.json()["error"]["code"] == 503
        assert int(h.headers["retry-after"]) >= 1
        refused = httpx.post(base + "/v1/completions", json=_GREEDY, timeout=30)
        assert refused.status_code == 503 and int(refused.headers["retry-after"]) >= 1
        assert refused.json()["error"]["type"] == "ServiceUnavailableError"

        h = _wait_health(base, "ok", timeout=120)  # default policy: first restart after 1 s
        assert h.status_code == 200 and h.json() == {"status": "ok", "engine_restarts": 1}
        assert time.monotonic() - t_kill >= 1.0  # the backoff was honoured
        new = _engine(server)
        assert new.pid != old.pid and not psutil.pid_exists(old.pid)
        new_ipc = _ipc_paths(server)
        assert len(new_ipc) == 2 and not new_ipc & old_ipc  # fresh sockets; the old files are gone
        assert not any(os.path.exists(p) for p in old_ipc)

        after = httpx.post(base + "/v1/completions", json=_GREEDY, timeout=60)
        assert after.status_code == 200
        assert after.json()["choices"][0]["text"] == before["choices"][0]["text"]
        assert after.json()["usage"]["completion_tokens"] == 8
        assert httpx.get(base + "/v1/models", timeout=10).json()["data"] == models["data"]
        assert _metric(base, "seallm:engine_restarts_total") == 1
    finally:
        code = stop_server(server)
    assert code == 0, open(log).read()[-3000:]


def test_engine_that_cannot_restart_ends_failed_and_front_end_stays_up(checkpoints, tmp_path):
    ckpt = shutil.copytree(checkpoints["llama"], tmp_path / "llama")
    cfg = tmp_path / "deploy.yaml"
    cfg.write_text(f"models: [{{name: llama, path: {ckpt}}}]\nengine_restart_max: 2\n"
                   "engine_restart_backoff_s: 0.1\nengine_restart_backoff_max_s: 0.2\n")
    log = str(tmp_path / "server.log")
    server, base = start_server({}, "--config", str(cfg), log_path=log)
    try:
        # The checkpoint goes away (a lost disk): every restart fails while loading it.
        os.rename(ckpt / "config.json", ckpt / "config.json.gone")
        _engine(server).send_signal(signal.SIGKILL)
        h = _wait_health(base, "failed", timeout=180)
        assert h.status_code == 503 and "retry-after" not in h.headers
        b = h.json()
        assert b["engine_restarts"] == 2 and b["error"]["type"] == "ServiceUnavailableError"
        assert "config.json" in b["last_engine_exit"] or "engine" in b["last_engine_exit"]
        assert server.poll() is None and _engine_procs(server) == []
        assert _metric(base, "seallm:engine_restarts_total") == 2
        r = httpx.post(base + "/v1/completions", json=_GREEDY, timeout=30)
        assert r.status_code == 503 and r.json()["error"]["code"] == 503
        assert httpx.get(base + "/v1/models", timeout=10).status_code == 200
        time.sleep(0.5)
        assert _health(base).json()["status"] == "failed"  # stays failed
    finally:
        code = stop_server(server)
    text = open(log).read()
    assert code == 0, text[-3000:]
    assert "giving up" in text


def test_a_hung_engine_is_killed_and_restarted(checkpoints, tmp_path):
    # SIGSTOP: the engine process is alive but silent; after engine_hang_timeout_s the
    # supervisor kills it and restarts it like a dead one.
    import yaml

    cfg = {"models": [{"name": "llama", "path": checkpoints["llama"]}], "kv_cache_memory": "64MiB",
           "engine_hang_timeout_s": 3, "engine_restart_backoff_s": 0.5}
    (tmp_path / "deploy.yaml").write_text(yaml.safe_dump(cfg))
    log = str(tmp_path / "server.log")
    proc, base = start_server({}, "--config", str(tmp_path / "deploy.yaml"), log_path=log)
    try:
        before = httpx.post(base + "/v1/completions", json=_GREEDY, timeout=60).json()["choices"][0]["text"]
        old = _engine(proc)
        old.send_signal(signal.SIGSTOP)
        r = _wait_health(base, "restarting", timeout=30)
        assert "hung" in r.json()["last_engine_exit"]
        _wait_health(base, "ok", timeout=120)
        assert _engine(proc).pid != old.pid
        after = httpx.post(base + "/v1/completions", json=_GREEDY, timeout=60).json()["choices"][0]["text"]
        assert after == before
        assert _metric(base, "seallm:engine_restarts_total") == 1
    finally:
        assert stop_server(proc) == 0, open(log).read()[-3000:]
