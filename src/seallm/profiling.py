"""``seallm profile``: measure one model's step times on this device and fit a cost model."""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time

from seallm.cost import BatchShape, ModelShape, RooflineCostModel, fit_max_affine, measure_local_cpu
from seallm.core import SamplingParams, SeqChunk, StepPlan


def model_shape(cfg) -> ModelShape:
    """The cost model's view of a ``ModelConfig``."""
    return ModelShape(cfg.num_layers, cfg.hidden_size, cfg.intermediate_size, cfg.num_heads, cfg.num_kv_heads,
                      cfg.head_dim, cfg.vocab_size, cfg.kv_spec.dtype_bytes)


def profile_model(llm, name: str, decode_batches=(1, 4, 16, 32, 64), contexts=(32, 128, 512),
                  prefill_chunks=(16, 64, 256, 512), repeats: int = 3, seed: int = 0) -> list[tuple[BatchShape, float]]:
    """Run synthetic iterations of ``name`` through the real executor; returns (batch, s) samples.

    Decode iterations: ``b`` sequences each with ``c`` tokens of context. Prefill iterations:
    one fresh chunk of ``n`` tokens, alone and on top of 8 decode sequences.
    """
    rng = random.Random(seed)
    cfg = llm.configs[name]
    kv, ex = llm.kv, llm.core.executor
    greedy = SamplingParams(max_tokens=1, temperature=0.0)
    samples = []

    def run(seqs):
        plan = StepPlan(name, tuple(seqs))
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            ex.execute(plan)
            times.append(time.perf_counter() - t0)
        samples.append((BatchShape.of(plan), statistics.median(times)))

    def seq(i, start, n):
        rid = f"profile-{i}"
        if not kv.allocate(rid, name, start + n):
            raise ValueError("the KV pool is too small for the profile grid; raise --kv-cache-memory")
        toks = tuple(rng.randrange(cfg.vocab_size) for _ in range(n))
        return SeqChunk(rid, toks, start, tuple(kv.block_table(rid)), True, greedy)

    def free_all():
        for rid in list(kv.requests_holding_pages()):
            if rid.startswith("profile-"):
                kv.free(rid)

    run([seq(0, 0, 8)])  # warm-up (and the CPU kernel's first compile), not recorded
    samples.clear()
    free_all()
    for b in decode_batches:
        for c in contexts:
            run([seq(i, c - 1, 1) for i in range(b)])
            free_all()
    for n in prefill_chunks:
        run([seq(0, 0, n)])
        free_all()
        run([seq(i + 1, 127, 1) for i in range(8)] + [seq(0, 0, n)])
        free_all()
    return samples


def add_profile_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("profile", help="measure a model's step times on this device and fit its cost model")
    p.add_argument("--model", required=True, metavar="NAME=PATH")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--kv-cache-memory", default="1GiB")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--output", default=None, help="JSON file (default: profile-NAME.json)")
    p.set_defaults(func=run_profile)


def run_profile(args: argparse.Namespace) -> int:
    from seallm import LLM
    from seallm.cli import _parse_models
    from seallm.models.config import CheckpointError

    models = _parse_models([args.model])
    name = next(iter(models))
    try:
        llm = LLM(models=models, device=args.device, dtype=args.dtype, kv_cache_memory=args.kv_cache_memory)
        samples = profile_model(llm, name, repeats=args.repeats)
    except (CheckpointError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    model, report = fit_max_affine(samples)
    roof = RooflineCostModel(model_shape(llm.configs[name]), measure_local_cpu()) if args.device == "cpu" else None
    out = {
        "model": name, "path": models[name], "device": args.device,
        "cost_model": json.loads(model.to_json()),
        "fit": vars(report),
        "samples": [dict(vars(b), seconds=t, roofline_s=roof.step_time(b) if roof else None) for b, t in samples],
    }
    path = args.output or f"profile-{name}.json"
    with open(path, "w") as f:
        json.dump(out, f, indent=2)
    print(f"{len(samples)} shapes; fit R2={report.r2:.3f}, median rel. error {100 * report.median_rel_error:.1f}%, "
          f"P90 {100 * report.p90_rel_error:.1f}% on {report.num_test} held-out shapes; wrote {path}")
    return 0
