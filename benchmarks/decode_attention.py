"""Decode attention on the CPU: the native paged kernel vs the gather + SDPA reference.

Workload (engine issue): 32 decode sequences, context lengths uniform in [64, 640], 12 query
heads, 4 KV heads, head dim 64, fp32, the engine's page layout for the ~125M Llama (512 KiB
pages, 21 tokens per page, unused page tail, shuffled block tables) and 12 layers' worth of
distinct pages, run layer after layer so each layer's K/V is cold in the caches as in the
engine. Writes ``benchmarks/results/decode_attention.json`` with ms per layer of both paths
and their ratio.

    python benchmarks/decode_attention.py [--batch 32] [--steps 20]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from seallm.worker.malloc import tune_malloc  # noqa: E402

tune_malloc()

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from common import write_result  # noqa: E402
from seallm.models import cpu_kernels  # noqa: E402
from seallm.models.attention import build_metadata, kv_view, layer_page_views  # noqa: E402


def reference(q, k_rows, v_rows, meta, hkv, scale, out):
    """``paged_attention``'s fallback decode branch: gather pages, masked SDPA."""
    nd, H, D = q.shape
    bt = meta.decode_block_tables
    kk = k_rows.index_select(0, bt.view(-1)).view(nd, -1, hkv, D).transpose(1, 2)
    vv = v_rows.index_select(0, bt.view(-1)).view(nd, -1, hkv, D).transpose(1, 2)
    o = F.scaled_dot_product_attention(q.unsqueeze(2), kk, vv, attn_mask=meta.decode_mask, scale=scale,
                                       enable_gqa=H != hkv)
    out.copy_(o.squeeze(2))


def kernel(q, k_rows, v_rows, meta, hkv, scale, out, tpp):
    cpu_kernels.paged_decode_attention(q, k_rows, v_rows, meta.decode_block_tables, meta.decode_context_lens, tpp,
                                       hkv, scale, meta.sliding_window, out=out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--min-ctx", type=int, default=64)
    ap.add_argument("--max-ctx", type=int, default=640)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--kv-heads", type=int, default=4)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--page-size-bytes", type=int, default=512 << 10)
    ap.add_argument("--steps", type=int, default=20, help="timed decode steps (each runs every layer)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    t0 = time.perf_counter()
    ok = cpu_kernels.decode_attention_available()
    compile_s = time.perf_counter() - t0
    if not ok:
        sys.exit("the CPU kernel is unavailable (SEALLM_CPU_KERNELS=0 or build failed)")

    L, H, hkv, D, dtype = args.layers, args.heads, args.kv_heads, args.head_dim, torch.float32
    per_token = L * 2 * hkv * D * 4
    tpp = args.page_size_bytes // per_token
    rng = random.Random(args.seed)
    ctxs = [rng.randint(args.min_ctx, args.max_ctx) for _ in range(args.batch)]
    need = sum(-(-c // tpp) for c in ctxs)
    num_pages = need + need // 4  # some free pages, shuffled allocation
    pool = torch.randn(num_pages * args.page_size_bytes // 4).view(torch.uint8)
    view = kv_view(pool, args.page_size_bytes, L, tpp, hkv, D, dtype)
    pages = layer_page_views(view)
    free = list(range(num_pages))
    rng.shuffle(free)
    chunks = []
    for c in ctxs:
        n = -(-c // tpp)
        chunks.append((c - 1, 1, free[:n]))
        free = free[n:]
    meta = build_metadata(chunks, len(chunks), tpp, None)
    qs = [torch.randn(args.batch, H, D) for _ in range(L)]
    out = torch.empty(args.batch, H, D)
    scale = D ** -0.5

    # correctness on this workload
    ref = torch.empty_like(out)
    for i in range(L):
        reference(qs[i], *pages[i], meta, hkv, scale, ref)
        kernel(qs[i], *pages[i], meta, hkv, scale, out, tpp)
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)

    def timed(fn) -> float:
        for _ in range(2):  # warm-up (allocator, threads)
            for i in range(L):
                fn(i)
        t = time.perf_counter()
        for _ in range(args.steps):
            for i in range(L):
                fn(i)
        return (time.perf_counter() - t) * 1e3 / (args.steps * L)

    runs = {"reference": [], "kernel": []}
    for _ in range(3):  # interleave to average out machine noise
        runs["reference"].append(timed(lambda i: reference(qs[i], *pages[i], meta, hkv, scale, ref)))
        runs["kernel"].append(timed(lambda i: kernel(qs[i], *pages[i], meta, hkv, scale, out, tpp)))
    ref_ms, ker_ms = min(runs["reference"]), min(runs["kernel"])
    kv_bytes = sum(ctxs) * hkv * D * 4 * 2
    res = dict(
        workload=dict(batch=args.batch, context_len=[args.min_ctx, args.max_ctx], mean_context=sum(ctxs) / len(ctxs),
                      layers=L, heads=H, kv_heads=hkv, head_dim=D, dtype="float32", tokens_per_page=tpp,
                      page_size_bytes=args.page_size_bytes, steps=args.steps, seed=args.seed),
        reference_gather_sdpa_ms_per_layer=ref_ms,
        kernel_ms_per_layer=ker_ms,
        speedup_reference_over_kernel=ref_ms / ker_ms,
        kernel_kv_read_gb_per_s=kv_bytes / (ker_ms * 1e-3) / 1e9,
        all_runs_ms_per_layer=runs,
        kernel_first_use_s=compile_s,
    )
    print(f"reference (gather + SDPA): {ref_ms:.3f} ms/layer")
    print(f"kernel:                    {ker_ms:.3f} ms/layer  ({res['kernel_kv_read_gb_per_s']:.1f} GB/s of K/V)")
    print(f"speedup: {ref_ms / ker_ms:.2f}x")
    print("wrote", write_result("decode_attention", res))


if __name__ == "__main__":
    main()
