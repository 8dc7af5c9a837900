"""Engine throughput: seallm vs transformers static batched ``generate``, same requests, same run.

Workload (engine issue): 32 requests, prompt lengths uniform in [64, 512], 128 output tokens
each (ignore EOS), a ~125M-parameter random Llama (hidden 768, 12 layers, 12 heads, 4 KV
heads) in fp32 on the CPU. Writes ``benchmarks/results/engine_throughput.json`` with output
tokens/s of both and their ratio.

    python benchmarks/engine_throughput.py [--requests 32] [--output-len 128] [--skip-hf]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from common import LLAMA_125M, checkpoint, write_result  # noqa: E402


def workload(n: int, lo: int, hi: int, vocab: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(3, vocab) for _ in range(rng.randint(lo, hi))] for _ in range(n)]


def run_transformers(path: str, prompts: list[list[int]], out_len: int) -> dict:
    import torch
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), 2, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):  # left padding, as batched generation needs
        ids[i, width - len(p):] = torch.tensor(p)
        mask[i, width - len(p):] = 1
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=out_len, min_new_tokens=out_len,
                             do_sample=False, pad_token_id=2)
    dt = time.perf_counter() - t0
    n_out = (out.shape[1] - width) * len(prompts)
    return dict(seconds=dt, output_tokens=n_out, output_tokens_per_s=n_out / dt)


def run_seallm(path: str, prompts: list[list[int]], out_len: int, budget: int) -> dict:
    from seallm import LLM, SamplingParams

    llm = LLM(models={"m": path}, kv_cache_memory="2GiB", max_num_batched_tokens=budget)
    llm.generate([prompts[0][:8]], SamplingParams(max_tokens=2, temperature=0))  # warm-up
    t0 = time.perf_counter()
    outs = llm.generate(prompts, SamplingParams(max_tokens=out_len, temperature=0, ignore_eos=True))
    dt = time.perf_counter() - t0
    n_out = sum(len(o.token_ids) for o in outs)
    assert all(len(o.token_ids) == out_len for o in outs)
    ttft = sorted(o.metrics.ttft for o in outs)
    return dict(seconds=dt, output_tokens=n_out, output_tokens_per_s=n_out / dt, steps=llm.core.num_steps,
                max_num_batched_tokens=budget, ttft_p50_s=ttft[len(ttft) // 2],
                scheduling_policy=llm.scheduler.policy.name,
                preemption_mode=llm.scheduler.config.preemption_mode)


def _in_subprocess(system: str, args: argparse.Namespace, env: dict | None = None) -> dict:
    """Run one system in a fresh Python process so neither inherits the other's memory state."""
    import json
    import subprocess

    cmd = [sys.executable, __file__, "--only", system, "--requests", str(args.requests), "--min-prompt",
           str(args.min_prompt), "--max-prompt", str(args.max_prompt), "--output-len", str(args.output_len),
           "--max-num-batched-tokens", str(args.max_num_batched_tokens), "--seed", str(args.seed)]
    full_env = dict(os.environ, **(env or {}))
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=full_env).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--min-prompt", type=int, default=64)
    ap.add_argument("--max-prompt", type=int, default=512)
    ap.add_argument("--output-len", type=int, default=128)
    ap.add_argument("--max-num-batched-tokens", type=int, default=2048)
    ap.add_argument("--skip-hf", action="store_true", help="only run seallm (no ratio)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", choices=["seallm", "transformers"], help=argparse.SUPPRESS)
    args = ap.parse_args()

    path = checkpoint("llama-125m", "llama", **LLAMA_125M)
    prompts = workload(args.requests, args.min_prompt, args.max_prompt, LLAMA_125M["vocab_size"], args.seed)
    if args.only:  # child process: print one JSON line
        import json

        r = (run_seallm(path, prompts, args.output_len, args.max_num_batched_tokens) if args.only == "seallm"
             else run_transformers(path, prompts, args.output_len))
        print(json.dumps(r))
        return
    res = dict(workload=dict(requests=args.requests, prompt_len=[args.min_prompt, args.max_prompt],
                             output_len=args.output_len, model="random Llama ~125M fp32", seed=args.seed))
    res["seallm"] = _in_subprocess("seallm", args)
    print(f"seallm:       {res['seallm']['output_tokens_per_s']:.1f} output tokens/s "
          f"({res['seallm']['seconds']:.1f} s)", flush=True)
    if not args.skip_hf:
        # The peer as users run it, and with the same glibc malloc tuning seallm applies to itself
        # (it speeds transformers up too); the ratio is taken against the faster of the two.
        res["transformers"] = _in_subprocess("transformers", args)
        res["transformers_malloc_tuned"] = _in_subprocess(
            "transformers", args, {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(2**31 - 1)})
        best = max(res["transformers"]["output_tokens_per_s"], res["transformers_malloc_tuned"]["output_tokens_per_s"])
        for k in ("transformers", "transformers_malloc_tuned"):
            print(f"{k}: {res[k]['output_tokens_per_s']:.1f} output tokens/s ({res[k]['seconds']:.1f} s)")
        res["ratio_seallm_over_transformers"] = res["seallm"]["output_tokens_per_s"] / best
        res["ratio_seallm_over_transformers_default"] = (res["seallm"]["output_tokens_per_s"]
                                                         / res["transformers"]["output_tokens_per_s"])
        print(f"ratio vs the faster transformers run: {res['ratio_seallm_over_transformers']:.2f}x")
    print("wrote", write_result("engine_throughput", res))


if __name__ == "__main__":
    main()
