"""Soak: overload and a disconnect storm against ``seallm serve`` (issue 8).

Phases, on the demo deployment (two random-weight models of different architectures):
  1. capacity: a closed loop of ``--concurrency`` streaming clients for ``--capacity-duration``
     seconds; capacity = completed requests per second;
  2. overload: open-loop Poisson arrivals of streaming clients at ``--load-factor`` (2) x the
     capacity for ``--duration`` (60) seconds, then the in-flight requests drain;
  3. disconnect storm: ``--storm-clients`` streaming clients at once, each dropping its
     connection after a few tokens (some before the first), plus non-streaming clients that
     time out;
then ``/metrics`` (KV pages used, refusal counters) and the RSS of the front-end and engine
processes. Every request is classified: completed (all its tokens, finish "length", [DONE]),
refused (429, with Retry-After), other 4xx, 5xx, lost (anything else: a dropped connection, a
stream that ends early, a timeout). Must hold: 5xx = 0, lost = 0, KV pages after = 0.

Writes ``benchmarks/results/soak.json``.

    python benchmarks/soak.py [--duration 60] [--load-factor 2] [--storm-clients 300]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from seallm.demo import ensure_demo_checkpoints, wait_healthy  # noqa: E402
from common import free_port, write_result  # noqa: E402

MODELS = ("demo-llama", "demo-qwen2")


# ---- processes and metrics ----------------------------------------------------------------------
def engine_process(server_pid: int):
    """The engine-core process: the server's oldest ``multiprocessing`` spawn child."""
    import psutil

    kids = [p for p in psutil.Process(server_pid).children() if any("spawn_main" in a for a in p.cmdline())]
    return min(kids, key=lambda p: p.create_time()) if kids else None


def rss_mib(pid: int | None) -> float | None:
    import psutil

    try:
        return round(psutil.Process(pid).memory_info().rss / 2**20, 1) if pid else None
    except psutil.Error:
        return None


class RSSSampler(threading.Thread):
    """Peak RSS of the front end and the engine, sampled every 0.5 s."""

    def __init__(self, pids: dict[str, int]) -> None:
        super().__init__(daemon=True)
        self.pids = pids
        self.peak = {k: 0.0 for k in pids}
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            for k, pid in self.pids.items():
                v = rss_mib(pid)
                if v is not None:
                    self.peak[k] = max(self.peak[k], v)
            self.halt.wait(0.5)


def read_metrics(base: str) -> dict:
    """Per-model gauges and counters of interest from ``/metrics``."""
    import urllib.request

    with urllib.request.urlopen(base + "/metrics", timeout=30) as r:
        text = r.read().decode()
    out: dict[str, dict[str, float]] = {}
    want = {"seallm:kv_cache_pages_used": "kv_pages_used", "seallm:num_requests_refused_total": "refused_429",
            "seallm:num_requests_running": "running", "seallm:num_requests_waiting": "waiting",
            "seallm:num_requests_swapped": "swapped", "seallm:num_preemptions_total": "preemptions"}
    for line in text.splitlines():
        name, _, rest = line.partition("{")
        if name in want and 'model="' in rest:
            model = rest.split('model="')[1].split('"')[0]
            out.setdefault(want[name], {})[model] = float(line.rsplit(" ", 1)[1])
    return out


async def wait_no_pages(base: str, timeout: float = 60.0) -> tuple[dict, float]:
    """KV pages used per model once all are free (or at the timeout), and the seconds it took."""
    t0 = time.monotonic()
    used = {}
    while time.monotonic() - t0 < timeout:
        used = (await asyncio.to_thread(read_metrics, base)).get("kv_pages_used", {})
        if used and not any(used.values()):
            break
        await asyncio.sleep(0.25)
    return used, round(time.monotonic() - t0, 2)


# ---- clients ------------------------------------------------------------------------------------
class Tally:
    """Outcomes of one phase."""

    def __init__(self) -> None:
        self.sent = self.completed = self.refused = self.client_4xx = self.server_5xx = self.lost = 0
        self.dropped = 0  # storm: the client left on purpose
        self.tokens = 0  # output tokens received, of every request
        self.retry_after_missing = 0
        self.ttft: list[float] = []
        self.e2e: list[float] = []
        self.examples: dict[str, list[str]] = {}

    def note(self, kind: str, what: str) -> None:
        ex = self.examples.setdefault(kind, [])
        if len(ex) < 5:
            ex.append(what[:300])

    def summary(self, seconds: float | None = None) -> dict:
        def q(xs: list[float], p: float) -> float | None:
            return round(sorted(xs)[min(len(xs) - 1, int(p * len(xs)))], 3) if xs else None

        d = dict(sent=self.sent, completed=self.completed, refused_429=self.refused, other_4xx=self.client_4xx,
                 server_5xx=self.server_5xx, lost=self.lost)
        if self.dropped:
            d["dropped_by_client"] = self.dropped
        if self.retry_after_missing:
            d["429_without_retry_after"] = self.retry_after_missing
        if seconds:
            d["seconds"] = round(seconds, 1)
            d["completed_per_s"] = round(self.completed / seconds, 3)
        if self.ttft:
            d["ttft_s"] = dict(p50=q(self.ttft, 0.5), p90=q(self.ttft, 0.9), p99=q(self.ttft, 0.99))
            d["e2e_s"] = dict(p50=q(self.e2e, 0.5), p90=q(self.e2e, 0.9), p99=q(self.e2e, 0.99))
        if self.examples:
            d["examples"] = self.examples
        return d


def make_body(rng: random.Random, args, max_tokens: int | None = None, stream: bool = True) -> dict:
    n_in = rng.randint(args.min_prompt_len, args.max_prompt_len)
    body = {"model": rng.choice(MODELS), "prompt": [rng.randrange(3, 500) for _ in range(n_in)],
            "max_tokens": max_tokens or args.output_len, "ignore_eos": True, "temperature": 0.0}
    if stream:
        body.update(stream=True, stream_options={"include_usage": True})
    return body


async def stream_one(session, base: str, body: dict, tally: Tally, drop_after: int | None = None,
                     timeout: float = 600.0) -> None:
    """One streaming request; ``drop_after``: close the connection after that many tokens
    (0: right after the response headers)."""
    import aiohttp

    tally.sent += 1
    t0 = time.monotonic()
    tokens, finish, done, first = 0, None, False, None
    try:
        async with session.post(base + "/v1/completions", json=body,
                                timeout=aiohttp.ClientTimeout(total=timeout)) as r:
            if r.status != 200:
                text = await r.text()
                if r.status == 429:
                    tally.refused += 1
                    if "Retry-After" not in r.headers:
                        tally.retry_after_missing += 1
                elif r.status >= 500:
                    tally.server_5xx += 1
                    tally.note("5xx", f"{r.status} {text}")
                else:
                    tally.client_4xx += 1
                    tally.note("4xx", f"{r.status} {text}")
                return
            if drop_after == 0:
                r.close()
                tally.dropped += 1
                return
            async for raw in r.content:
                line = raw.decode().strip()
                if not line.startswith("data: "):
                    continue
                if line == "data: [DONE]":
                    done = True
                    break
                d = json.loads(line[6:])
                if "error" in d:
                    status = d["error"].get("code")
                    kind = "5xx" if isinstance(status, int) and status >= 500 else "stream error"
                    tally.note(kind, json.dumps(d["error"]))
                    if kind == "5xx":
                        tally.server_5xx += 1
                    else:
                        tally.lost += 1
                    return
                for ch in d.get("choices", []):
                    tokens += 1
                    tally.tokens += 1
                    if first is None:
                        first = time.monotonic() - t0
                    finish = ch.get("finish_reason") or finish
                if drop_after is not None and tokens >= drop_after:
                    r.close()
                    tally.dropped += 1
                    return
    except asyncio.CancelledError:
        raise
    except Exception as e:  # noqa: BLE001 - a dropped connection or a timeout: lost
        tally.lost += 1
        tally.note("lost", f"{type(e).__name__}: {e} after {tokens} tokens")
        return
    if done and finish == "length" and tokens == body["max_tokens"]:
        tally.completed += 1
        tally.ttft.append(first or 0.0)
        tally.e2e.append(time.monotonic() - t0)
    else:
        tally.lost += 1
        tally.note("lost", f"stream ended: done={done} finish={finish} tokens={tokens}/{body['max_tokens']}")


async def non_streaming_dropped(session, base: str, body: dict, tally: Tally, after_s: float) -> None:
    """A non-streaming request whose client gives up after ``after_s``."""
    import aiohttp

    tally.sent += 1
    try:
        async with session.post(base + "/v1/completions", json=body,
                                timeout=aiohttp.ClientTimeout(total=after_s)) as r:
            await r.read()
            if r.status == 200:
                tally.completed += 1
            elif r.status == 429:
                tally.refused += 1
            elif r.status >= 500:
                tally.server_5xx += 1
                tally.note("5xx", f"{r.status}")
            else:
                tally.client_4xx += 1
    except (asyncio.TimeoutError, aiohttp.ClientError):
        tally.dropped += 1


def _session(limit: int = 0):
    import aiohttp

    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=limit, force_close=False))


async def capacity_phase(base: str, args, rng: random.Random) -> tuple[float, dict]:
    tally = Tally()
    stop_at = time.monotonic() + args.capacity_duration

    async def worker(session):
        while time.monotonic() < stop_at:
            await stream_one(session, base, make_body(rng, args), tally)

    t0 = time.monotonic()
    async with _session() as s:
        await asyncio.gather(*[worker(s) for _ in range(args.concurrency)])
    seconds = time.monotonic() - t0
    # Output tokens per second over the run (the requests in flight at its end included),
    # in requests of --output-len tokens.
    out = tally.summary(seconds)
    out["output_tokens_per_s"] = round(tally.tokens / seconds, 1)
    return tally.tokens / seconds / args.output_len, out


async def overload_phase(base: str, args, rng: random.Random, rate: float) -> dict:
    tally = Tally()
    tasks = []
    t0 = time.monotonic()
    async with _session() as s:
        t = t0
        while True:
            t += rng.expovariate(rate)
            if t - t0 >= args.duration:
                break
            await asyncio.sleep(max(0.0, t - time.monotonic()))
            tasks.append(asyncio.create_task(stream_one(s, base, make_body(rng, args), tally)))
        arrivals_end = time.monotonic()
        await asyncio.gather(*tasks)
    out = tally.summary(args.duration)
    out.update(rate_per_s=round(rate, 3), drain_s=round(time.monotonic() - arrivals_end, 1))
    return out


async def storm_phase(base: str, args, rng: random.Random) -> dict:
    tally = Tally()
    async with _session() as s:
        jobs = []
        for i in range(args.storm_clients):
            body = make_body(rng, args, max_tokens=args.storm_output_len)
            if i % 10 == 9:
                jobs.append(non_streaming_dropped(s, base, dict(body, stream=False, stream_options=None),
                                                  tally, rng.uniform(0.2, 2.0)))
            else:
                jobs.append(stream_one(s, base, body, tally, drop_after=rng.choice([0, 1, 2, 5, 10, 20])))
        await asyncio.gather(*jobs)
    return tally.summary()


# ---- main ---------------------------------------------------------------------------------------
def start_server(args) -> tuple[subprocess.Popen, str]:
    ckpts = ensure_demo_checkpoints()
    port = args.port or free_port()
    cmd = [sys.executable, "-m", "seallm.cli", "serve", "--port", str(port), "--kv-cache-memory",
           args.kv_cache_memory, "--log-level", "warning"]
    for name in MODELS:
        cmd += ["--model", f"{name}={ckpts[name]}"]
    if args.max_waiting_requests is not None:
        cmd += ["--max-waiting-requests", str(args.max_waiting_requests)]
    cmd += args.serve_arg
    log = open(args.log, "w") if args.log else subprocess.DEVNULL
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, proc, timeout=300)
    except RuntimeError:
        proc.kill()
        raise
    return proc, base


def stop_server(proc: subprocess.Popen) -> int | None:
    proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        return None


async def run(args) -> dict:
    rng = random.Random(args.seed)
    proc, base = start_server(args)
    try:
        engine = engine_process(proc.pid)
        pids = {"front_end": proc.pid, "engine": engine.pid if engine else None}
        # Warm-up (kernels, allocator), then the "before" snapshot.
        warm = Tally()
        async with _session() as s:
            await asyncio.gather(*[stream_one(s, base, make_body(rng, args, max_tokens=8), warm) for _ in range(8)])
        rss_before = {k: rss_mib(p) for k, p in pids.items()}
        sampler = RSSSampler(pids)
        sampler.start()

        print(f"soak: capacity ({args.concurrency} closed-loop streams, {args.capacity_duration:g} s)...", flush=True)
        capacity, cap = await capacity_phase(base, args, rng)
        print(f"  {capacity:.2f} requests/s; overload at {args.load_factor:g}x for {args.duration:g} s...", flush=True)
        over = await overload_phase(base, args, rng, args.load_factor * capacity)
        print(f"  {json.dumps({k: over[k] for k in ('sent', 'completed', 'refused_429', 'server_5xx', 'lost')})}",
              flush=True)
        pages_after_overload, _ = await wait_no_pages(base)
        print(f"soak: disconnect storm ({args.storm_clients} clients)...", flush=True)
        storm = await storm_phase(base, args, rng)
        pages_after, free_s = await wait_no_pages(base)
        # The server still serves everyone after the storm.
        after = Tally()
        async with _session() as s:
            await asyncio.gather(*[stream_one(s, base, make_body(rng, args, max_tokens=16), after) for _ in range(8)])
        metrics = await asyncio.to_thread(read_metrics, base)
        sampler.halt.set()
        sampler.join()
        engine_after = engine_process(proc.pid)
        result = dict(
            config=dict(duration_s=args.duration, capacity_duration_s=args.capacity_duration,
                        concurrency=args.concurrency, load_factor=args.load_factor, output_len=args.output_len,
                        prompt_len=[args.min_prompt_len, args.max_prompt_len], storm_clients=args.storm_clients,
                        storm_output_len=args.storm_output_len, kv_cache_memory=args.kv_cache_memory,
                        max_waiting_requests=args.max_waiting_requests, serve_args=args.serve_arg, seed=args.seed,
                        models=list(MODELS)),
            capacity_requests_per_s=round(capacity, 3), capacity=cap, overload=over, storm=storm,
            after_storm=after.summary(),
            kv_pages_used_after_overload=pages_after_overload, kv_pages_used_after=pages_after,
            seconds_to_free_pages_after_storm=free_s,
            refused_429_total_by_model=metrics.get("refused_429", {}),
            preemptions_total_by_model=metrics.get("preemptions", {}),
            rss_mib=dict(before=rss_before, after={k: rss_mib(p) for k, p in pids.items()}, peak=sampler.peak),
            engine_pid_unchanged=engine_after is not None and engine is not None and engine_after.pid == engine.pid,
        )
    finally:
        code = stop_server(proc)
    result["server_exit_code"] = code
    phases = (over, storm, result["after_storm"])
    result["checks"] = dict(
        no_5xx=all(p["server_5xx"] == 0 for p in phases),
        none_lost=all(p["lost"] == 0 for p in phases),
        no_kv_pages_after=bool(pages_after) and not any(pages_after.values()),
        all_served_after_storm=result["after_storm"]["completed"] == result["after_storm"]["sent"],
        engine_pid_unchanged=result["engine_pid_unchanged"], clean_exit=code == 0)
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of overload (default 60)")
    ap.add_argument("--capacity-duration", type=float, default=20.0, help="seconds of the capacity run")
    ap.add_argument("--concurrency", type=int, default=64,
                    help="closed-loop streams of the capacity run (enough to saturate the batch)")
    ap.add_argument("--load-factor", type=float, default=2.0, help="overload arrival rate / capacity (default 2)")
    ap.add_argument("--output-len", type=int, default=64)
    ap.add_argument("--min-prompt-len", type=int, default=16)
    ap.add_argument("--max-prompt-len", type=int, default=256)
    ap.add_argument("--storm-clients", type=int, default=300)
    ap.add_argument("--storm-output-len", type=int, default=512)
    ap.add_argument("--kv-cache-memory", default="256MiB")
    ap.add_argument("--max-waiting-requests", type=int, default=None,
                    help="the server's waiting-queue bound per model (default: the server's, with admission "
                         "by queueing delay, max_queue_delay_s)")
    ap.add_argument("--serve-arg", action="append", default=[], help="extra 'seallm serve' argument (repeatable)")
    ap.add_argument("--port", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--log", default=None, help="server log file")
    ap.add_argument("--out-dir", default="benchmarks/results")
    args = ap.parse_args()
    result = asyncio.run(run(args))
    path = write_result("soak", result, args.out_dir)
    print(json.dumps({k: result[k] for k in ("capacity_requests_per_s", "overload", "storm", "kv_pages_used_after",
                                             "rss_mib", "checks")}, indent=1, default=str))
    print(f"wrote {path}")
    return 0 if all(result["checks"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
