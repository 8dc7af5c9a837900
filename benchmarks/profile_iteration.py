"""Where one engine iteration's time goes: offline ``LLM`` on the engine-throughput workload.

Same workload as ``benchmarks/engine_throughput.py`` / the offline part of
``benchmarks/peer_vllm.py`` (32 requests, prompts 64-512 tokens, 128 output tokens, greedy,
ignore_eos, the random ~125M Llama with the peer's tokenizer). Wraps the hot-path functions
with wall-clock timers (in-process, no profiler hooks; each wrapper costs < 1 us) and splits
the generate() wall time into:

  schedule      ``ReplicaCore.plan`` (the scheduler's plan)
  update        ``ReplicaCore.apply`` (scheduler bookkeeping after a step)
  prepare       ``ModelExecutor.execute`` outside the forward pass and the sampler:
                ``build_metadata`` (shown on its own) plus input tensors
  forward       ``LlamaForCausalLM.forward``, split into
                  linear     every ``F.linear`` (qkv, o, gate_up, down, lm_head)
                  kv_write   writing this step's K/V into the pages
                  decode_attn the decode-attention kernel (or its SDPA fallback)
                  prefill_attn prefill SDPA (incl. page gathers for chunks with a prefix)
                  other      norms, rope, embedding, silu, residual adds, logits rows
  sample        ``Sampler.sample`` (incl. the logits copy to the host)
  engine_other  the rest of generate() (request objects, detokenize, output collection)

    python benchmarks/profile_iteration.py [--dtypes fp32 bf16] [--label after] [--reps 1]

Writes ``benchmarks/results/profile-iteration-<label>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

DTYPES = {"fp32": "float32", "bf16": "bfloat16"}


class Timers:
    def __init__(self) -> None:
        self.t: dict[str, float] = {}
        self.n: dict[str, int] = {}

        self.kind = ""  # "decode" or "mixed": the step being executed

    def add(self, key: str, dt: float) -> None:
        for k in (key, f"{self.kind}:{key}"):
            self.t[k] = self.t.get(k, 0.0) + dt
            self.n[k] = self.n.get(k, 0) + 1

    def wrap(self, key: str, fn):
        def timed(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self.add(key, time.perf_counter() - t0)
        timed.__wrapped__ = fn
        return timed


def instrument(T: Timers) -> None:
    import types

    import torch.nn.functional as F

    from seallm.engine import core as core_mod
    from seallm.models import attention, llama
    from seallm.worker import executor, sampler

    core_mod.ReplicaCore.plan = T.wrap("schedule", core_mod.ReplicaCore.plan)
    core_mod.ReplicaCore.apply = T.wrap("update", core_mod.ReplicaCore.apply)
    execute = T.wrap("execute", executor.ModelExecutor.execute)

    def execute_kind(self, plan):
        T.kind = "decode" if all(s.is_decode for s in plan.seqs) else "mixed"
        try:
            return execute(self, plan)
        finally:
            T.kind = ""

    executor.ModelExecutor.execute = execute_kind
    executor.build_metadata = T.wrap("build_metadata", executor.build_metadata)
    llama.LlamaForCausalLM.forward = T.wrap("forward", llama.LlamaForCausalLM.forward)
    sampler.Sampler.sample = T.wrap("sample", sampler.Sampler.sample)
    # F.linear inside the model: a proxy module for llama's ``F``
    proxy = types.SimpleNamespace(**{k: getattr(F, k) for k in dir(F) if not k.startswith("__")})
    proxy.linear = T.wrap("linear", F.linear)
    llama.F = proxy
    if hasattr(llama, "linear"):  # linear layers through seallm.models.linear (packed weights)
        llama.linear = T.wrap("linear", llama.linear)
    llama.paged_attention = T.wrap("attention", llama.paged_attention)
    if hasattr(attention, "write_kv"):
        attention.write_kv = T.wrap("kv_write", attention.write_kv)
    attention.cpu_paged_decode_attention = T.wrap("decode_attn", attention.cpu_paged_decode_attention)


def child(args) -> dict:
    import torch

    from peer_vllm import offline_prompts, peer_checkpoint
    from seallm import LLM, SamplingParams

    T = Timers()
    instrument(T)
    prompts = offline_prompts(args)
    llm = LLM(models={"m": peer_checkpoint(0)}, kv_cache_memory="2GiB", dtype=DTYPES[args.dtype],
              max_num_batched_tokens=args.max_num_batched_tokens)
    llm.generate([prompts[0][:8]], SamplingParams(max_tokens=2, temperature=0))  # warm-up (kernel build)
    T.t.clear()
    T.n.clear()
    steps0 = llm.core.num_steps
    t0 = time.perf_counter()
    outs = llm.generate(prompts, SamplingParams(max_tokens=args.output_len, temperature=0, ignore_eos=True))
    total = time.perf_counter() - t0
    n_out = sum(len(o.token_ids) for o in outs)
    def split(prefix: str) -> dict:
        g = lambda k: T.t.get(prefix + k, 0.0)  # noqa: E731
        attn_write = g("kv_write")
        return {
            "build_metadata": g("build_metadata"),
            "prepare_other": g("execute") - g("forward") - g("sample") - g("build_metadata"),
            "forward.linear": g("linear"),
            "forward.kv_write": attn_write,
            "forward.decode_attn": g("decode_attn"),
            "forward.prefill_attn": g("attention") - attn_write - g("decode_attn"),
            "forward.other": g("forward") - g("linear") - g("attention"),
            "sample": g("sample"),
        }

    t = T.t
    g = lambda k: t.get(k, 0.0)  # noqa: E731
    attn_write = g("kv_write")
    by_kind = {}
    for kind in ("decode", "mixed"):
        n = T.n.get(f"{kind}:execute", 0)
        if n:
            by_kind[kind] = dict(steps=n, seconds=round(T.t[f"{kind}:execute"], 4),
                                 ms_per_step={k: round(1e3 * v / n, 3) for k, v in split(f"{kind}:").items()})
    parts = {
        "schedule": g("schedule"),
        "update": g("update"),
        "build_metadata": g("build_metadata"),
        "prepare_other": g("execute") - g("forward") - g("sample") - g("build_metadata"),
        "forward.linear": g("linear"),
        "forward.kv_write": attn_write,
        "forward.decode_attn": g("decode_attn"),
        "forward.prefill_attn": g("attention") - attn_write - g("decode_attn"),
        "forward.other": g("forward") - g("linear") - g("attention"),
        "sample": g("sample"),
    }
    parts["engine_other"] = total - sum(parts.values())
    steps = llm.core.num_steps - steps0
    return dict(dtype=args.dtype, seconds=total, output_tokens=n_out, output_tokens_per_s=n_out / total,
                steps=steps, torch_threads=torch.get_num_threads(),
                seconds_by_part={k: round(v, 4) for k, v in parts.items()},
                share_by_part={k: round(v / total, 4) for k, v in parts.items()},
                ms_per_step_by_part={k: round(1e3 * v / steps, 3) for k, v in parts.items()},
                by_step_kind=by_kind, calls={k: T.n[k] for k in sorted(T.n) if ":" not in k}, token_ids_head=[list(o.token_ids[:16]) for o in outs[:4]])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES), default=["fp32", "bf16"])
    ap.add_argument("--label", default="after")
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--min-prompt", type=int, default=64)
    ap.add_argument("--max-prompt", type=int, default=512)
    ap.add_argument("--output-len", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-num-batched-tokens", type=int, default=2048)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--dtype", default="fp32", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    out = dict(workload=dict(requests=args.requests, prompt_len=[args.min_prompt, args.max_prompt],
                             output_len=args.output_len, seed=args.seed, model="random Llama ~125M (peer checkpoint)"),
               label=args.label, load_before=os.getloadavg(), runs={})
    try:
        out["commit"] = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                       cwd=os.path.dirname(HERE)).stdout.strip()
    except OSError:
        pass
    for rep in range(args.reps):
        for d in args.dtypes:
            cmd = [sys.executable, __file__, "--child", "--dtype", d] + [
                f"--{k.replace('_', '-')}={getattr(args, k)}" for k in
                ("requests", "min_prompt", "max_prompt", "output_len", "seed", "max_num_batched_tokens")]
            r = subprocess.run(cmd, capture_output=True, text=True, check=True)
            res = json.loads(r.stdout.strip().splitlines()[-1])
            out["runs"].setdefault(d, []).append(res)
            print(f"{d} rep {rep}: {res['output_tokens_per_s']:.1f} tok/s, {res['steps']} steps, "
                  f"ms/step {res['ms_per_step_by_part']}", flush=True)
    out["median_tokens_per_s"] = {d: statistics.median(r["output_tokens_per_s"] for r in rs)
                                  for d, rs in out["runs"].items()}
    out["load_after"] = os.getloadavg()
    path = os.path.join(HERE, "results", f"profile-iteration-{args.label}.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
    print("wrote", path)


if __name__ == "__main__":
    main()
