"""Cost of the HTTP path around the engine (ScaleLLM's point), and a peer server.

At 1, 16 and 64 concurrent streams (closed loop), the same requests go
  (a) to the engine driven directly in-process (no HTTP, no tokenizer, no IPC),
  (b) through ``seallm serve`` (HTTP + SSE streaming + ZeroMQ engine process),
  (c) to ``transformers serve`` on the same checkpoint (``--continuous-batching`` when it
      works on this device; otherwise plain, recorded in the JSON), through chat
      completions, compared with seallm's chat path on the same requests.
Writes ``benchmarks/results/serving_overhead.json`` with output tokens/s, per-token latency
(mean inter-token gap, s) and the ratios.

    python benchmarks/serving_overhead.py [--concurrency 1 16 64] [--output-len 128] [--skip-peer]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from seallm.demo import wait_healthy  # noqa: E402
from common import free_port, write_result  # noqa: E402



def summarize(token_times: list[list[float]], start: float, end: float) -> dict:
    n_out = sum(len(t) for t in token_times)
    gaps = [(t[-1] - t[0]) / (len(t) - 1) for t in token_times if len(t) > 1]
    return dict(requests=len(token_times), output_tokens=n_out, seconds=end - start,
                output_tokens_per_s=n_out / (end - start), per_token_latency_s=sum(gaps) / max(1, len(gaps)))


def run_engine_direct(path: str, prompts: list[list[int]], conc: int, out_len: int, budget: int) -> dict:
    from seallm import LLM, SamplingParams
    from seallm.core import Request

    llm = LLM(models={"m": path}, kv_cache_memory="1GiB", max_num_batched_tokens=budget)
    core = llm.core
    params = SamplingParams(max_tokens=out_len, temperature=0.0, ignore_eos=True)
    llm.generate([prompts[0]], SamplingParams(max_tokens=4, temperature=0))  # warm-up
    times: dict[str, list[float]] = {}
    nxt, inflight = 0, 0
    start = time.perf_counter()
    while nxt < len(prompts) or inflight:
        while inflight < conc and nxt < len(prompts):
            rid = f"r{nxt}"
            core.add_request(Request(rid, "m", prompts[nxt], params, time.time()))
            times[rid] = []
            nxt += 1
            inflight += 1
        for r in core.step():
            times[r.request_id].append(time.perf_counter())
            if r.is_finished:
                inflight -= 1
    return summarize(list(times.values()), start, time.perf_counter())


async def _http_stream(session, url: str, body: dict, chat: bool) -> list[float]:
    """Timestamps of the chunks that carried text, stretched to the usage's token count when
    the server reports it (chunks with no new text, e.g. a held-back partial character, are
    not sent)."""
    stamps = []
    n_tokens = None
    async with session.post(url, json=body) as resp:
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}: {(await resp.text())[:300]}")
        async for raw in resp.content:
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            d = json.loads(line[6:])
            if "error" in d:
                raise RuntimeError(str(d["error"])[:300])
            if d.get("usage"):
                n_tokens = d["usage"]["completion_tokens"]
            for c in d.get("choices") or []:
                piece = (c.get("delta") or {}).get("content") if chat else c.get("text")
                if piece:
                    stamps.append(time.perf_counter())
    if n_tokens is not None and stamps and n_tokens > len(stamps):
        # spread the uncounted tokens over the stream (keeps first/last times, fixes the count)
        first, last = stamps[0], stamps[-1]
        stamps = [first + (last - first) * k / max(1, n_tokens - 1) for k in range(n_tokens)]
    return stamps


async def _closed_loop(url: str, bodies: list[dict], conc: int, chat: bool, time_limit: float) -> dict:
    import aiohttp

    queue = list(range(len(bodies)))
    results: list[list[float]] = []
    errors: list[str] = []
    start = time.perf_counter()

    async def worker(session):
        while queue and time.perf_counter() - start < time_limit:
            i = queue.pop(0)
            try:
                results.append(await _http_stream(session, url, bodies[i], chat))
            except Exception as e:  # recorded, not fatal
                errors.append(str(e))

    conn = aiohttp.TCPConnector(limit=conc + 4)
    timeout = aiohttp.ClientTimeout(total=time_limit + 60, sock_read=30)  # a stalled stream is an error
    async with aiohttp.ClientSession(connector=conn, timeout=timeout) as s:
        await asyncio.gather(*[worker(s) for _ in range(conc)])
    out = summarize(results, start, time.perf_counter())
    out["errors"] = len(errors)
    if errors:
        out["first_error"] = errors[0]
    return out


def _wait_port(port: int, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise RuntimeError("server not listening")


def _stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


MODELS = {
    # the demo's tiny Llama: ~0.2 ms of engine time per token, the worst case for any front end
    "demo": None,
    # the engine issue's shape (hidden 768, 12 layers, 12 heads, 4 KV heads), vocabulary 512
    "base": dict(hidden_size=768, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=12,
                 num_key_value_heads=4, vocab_size=512, max_position_embeddings=2048),
}


def model_path(name: str) -> str:
    from common import CACHE

    from seallm.demo import ensure_demo_checkpoints
    from seallm.models.random_checkpoint import write_random_checkpoint

    if MODELS[name] is None:
        return ensure_demo_checkpoints()["demo-llama"]
    path = os.path.join(CACHE, f"llama-{name}-tok")
    if not os.path.exists(os.path.join(path, "tokenizer.json")):
        write_random_checkpoint(path, "llama", **MODELS[name])
    return path


def measure(name: str, args) -> dict:
    path = model_path(name)
    rng = random.Random(0)
    res: dict = dict(checkpoint=path, levels={})
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "seallm.cli", "serve", "--model", f"m={path}", "--port", str(port),
                               "--max-num-batched-tokens", str(args.max_num_batched_tokens), "--log-level", "warning"])
    try:
        wait_healthy(base, server, timeout=300)
        for conc in args.concurrency:
            n = max(args.rounds * conc, 4)
            prompts = [[rng.randrange(10, 500) for _ in range(args.prompt_len)] for _ in range(n)]
            lvl = res["levels"][str(conc)] = {}
            lvl["engine_direct"] = run_engine_direct(path, prompts, conc, args.output_len, args.max_num_batched_tokens)
            bodies = [{"model": "m", "prompt": p, "max_tokens": args.output_len, "temperature": 0, "stream": True,
                       "stream_options": {"include_usage": True}, "ignore_eos": True} for p in prompts]
            lvl["seallm_http"] = asyncio.run(_closed_loop(base + "/v1/completions", bodies, conc, False, 900))
            lvl["http_over_engine_throughput"] = (lvl["seallm_http"]["output_tokens_per_s"]
                                                  / lvl["engine_direct"]["output_tokens_per_s"])
            print(f"{name} c={conc}: engine {lvl['engine_direct']['output_tokens_per_s']:.0f} tok/s, "
                  f"HTTP {lvl['seallm_http']['output_tokens_per_s']:.0f} tok/s "
                  f"({100 * (1 - lvl['http_over_engine_throughput']):.1f}% cost)", flush=True)
            chats = [{"messages": [{"role": "user", "content": f"Tell me a long story number {i}."}],
                      "max_tokens": args.output_len, "stream": True,
                      "stream_options": {"include_usage": True}} for i in range(n)]
            lvl["_chats"] = chats
            lvl["seallm_chat"] = asyncio.run(_closed_loop(base + "/v1/chat/completions",
                                                          [dict(c, model="m", ignore_eos=True) for c in chats],
                                                          conc, True, 900))
    finally:
        _stop(server)
    if not args.skip_peer:
        res["peer"] = run_peer(path, res, args, name)
    for lvl in res["levels"].values():
        lvl.pop("_chats", None)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", choices=sorted(MODELS), default=["demo", "base"])
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    ap.add_argument("--prompt-len", type=int, default=64)
    ap.add_argument("--output-len", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=2, help="requests per stream slot (requests = rounds x conc)")
    ap.add_argument("--max-num-batched-tokens", type=int, default=512)
    ap.add_argument("--skip-peer", action="store_true")
    ap.add_argument("--peer-time-limit", type=float, default=60.0)
    args = ap.parse_args()
    res = dict(prompt_len=args.prompt_len, output_len=args.output_len, rounds=args.rounds,
               models={m: measure(m, args) for m in args.models})
    print("wrote", write_result("serving_overhead", res))


def run_peer(path: str, res: dict, args, name: str) -> dict:
    info: dict = {}
    for cb in (True, False):
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        cmd = [os.path.join(os.path.dirname(sys.executable), "transformers"), "serve", "--port", str(port),
               "--device", "cpu", "--force_model", path, "--log_level", "warning"]
        if cb:
            cmd.append("--continuous-batching")
        # Offline: transformers serve's /v1/models asks the Hugging Face hub, so wait for the port.
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env=dict(os.environ, HF_HUB_OFFLINE="1"))
        try:
            _wait_port(port, proc)
            probe = asyncio.run(_closed_loop(base + "/v1/chat/completions", [
                {"model": path, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "stream": True}],
                1, True, 20))
            if probe["errors"] or probe["output_tokens"] == 0:
                info["continuous_batching_failed" if cb else "plain_failed"] = probe.get("first_error", "no tokens")
                continue
            info["mode"] = "transformers serve" + (" --continuous-batching" if cb else "")
            for conc, lvl in res["levels"].items():
                bodies = [dict(c, model=path) for c in lvl["_chats"]][: max(int(conc), 4)]
                lvl["transformers_chat"] = t = asyncio.run(_closed_loop(
                    base + "/v1/chat/completions", bodies, int(conc), True, args.peer_time_limit))
                lvl["seallm_chat_over_transformers"] = (lvl["seallm_chat"]["output_tokens_per_s"]
                                                        / max(t["output_tokens_per_s"], 1e-9))
                print(f"{name} c={conc}: transformers {t['output_tokens_per_s']:.0f} tok/s vs seallm chat "
                      f"{lvl['seallm_chat']['output_tokens_per_s']:.0f} tok/s", flush=True)
            return info
        finally:
            _stop(proc)
    return info


if __name__ == "__main__":
    main()
