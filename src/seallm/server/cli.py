"""``seallm serve``: an OpenAI-compatible server for one device's models."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys


def add_serve_parser(sub: argparse._SubParsersAction) -> None:
    from seallm.cluster.router import Router
    from seallm.sched.policy import POLICIES

    ROUTING_POLICIES = Router.POLICIES
    p = sub.add_parser("serve", help="serve models over an OpenAI-compatible HTTP API",
                       description="With no --model and no --config, serves the built-in demo deployment "
                                   "(two small random-weight models of different architectures).")
    p.add_argument("--model", action="append", metavar="NAME=PATH", help="a Hugging Face checkpoint (repeatable)")
    p.add_argument("--config", help="YAML deployment file (models, device, KV memory, policy, SLO classes)")
    p.add_argument("--host", default=None, help="default 127.0.0.1")
    p.add_argument("--port", type=int, default=None, help="default 8000")
    p.add_argument("--device", default=None, help="cpu (default) or cuda[:i]")
    p.add_argument("--dtype", default=None, help="auto (default), float32, bfloat16, float16")
    p.add_argument("--kv-cache-memory", default=None, help="KV pool size, e.g. 2GiB (default 1GiB)")
    p.add_argument("--scheduling-policy", default=None, choices=POLICIES,
                   help="seallm (default), fcfs, slos-serve (SLO planner with soft admission) or sarathi")
    p.add_argument("--max-num-batched-tokens", type=int, default=None, help="per-iteration token budget (512)")
    p.add_argument("--max-num-seqs", type=int, default=None, help="most sequences per iteration (128)")
    p.add_argument("--preemption-mode", default=None, choices=("recompute", "swap"),
                   help="what a preempted request loses: swap (default: KV to host memory and back) or recompute")
    p.add_argument("--swap-space", default=None, help="host memory for swapped KV pages (default 4GiB)")
    p.add_argument("--max-tokens-limit", type=int, default=None, help="most output tokens per request")
    p.add_argument("--max-waiting-requests", type=int, default=None,
                   help="admission control: most waiting requests per model, beyond which 429 (default 1024; 0: none)")
    p.add_argument("--max-waiting-tokens", type=int, default=None,
                   help="admission control: most prompt tokens waiting per model (default 1048576; 0: none)")
    p.add_argument("--max-queue-delay", type=float, default=None, dest="max_queue_delay_s",
                   help="admission control: refuse (429) while a model's requests wait longer than this to start "
                        "(s, default 10; 0: none)")
    p.add_argument("--max-sequences-per-request", type=int, default=None,
                   help="most prompts x n in one request (default 256)")
    p.add_argument("--max-request-body", default=None, help="largest request body, e.g. 4MiB (default); 413 beyond")
    p.add_argument("--allow-request-chat-template", action="store_true", default=None,
                   help="accept chat_template in chat_template_kwargs (rendered in a child process, time-limited)")
    p.add_argument("--max-resident-models", type=int, default=None,
                   help="most models on the device at once; others load on demand, evicting an idle one")
    p.add_argument("--weights-memory", default=None, help="device memory for resident weights, e.g. 2GiB")
    p.add_argument("--host-weight-cache", default=None,
                   help="host memory keeping unloaded models' weights for fast reloads (default 8GiB; 0: none)")
    p.add_argument("--residency-policy", default=None, choices=("seallm", "lru"),
                   help="which model loads next and which makes room (default seallm)")
    p.add_argument("--threads", type=int, default=None,
                   help="intra-op CPU threads of the engine process (default: every core)")
    p.add_argument("--concurrent-models", type=_concurrent_models, default=None,
                   help="CPU: most models whose decode iterations run at once, each on its share of the "
                        "threads (default auto: every model, up to the thread count; 1: one at a time)")
    p.add_argument("--routing-policy", default=None, choices=ROUTING_POLICIES,
                   help="how a request picks one of several replicas (default least_loaded; slo: "
                        "try-then-forward on the replicas' SLO planners)")
    p.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' on /v1")
    p.add_argument("--log-level", default="info")
    p.set_defaults(func=run_serve)


def _concurrent_models(v: str) -> int | str:
    if v == "auto":
        return v
    try:
        n = int(v)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'auto', got {v!r}")
    return n


def deployment_from_args(args: argparse.Namespace):
    """The :class:`DeploymentConfig` of the command line (file, then flags on top)."""
    from seallm.cli import _parse_models
    from seallm.deploy import ModelEntry, deployment_from

    cfg = deployment_from(_parse_models(args.model or []), args.config)
    if cfg is None:
        from seallm.demo import ensure_demo_checkpoints

        print("seallm: no --model given: serving the demo deployment. Its weights are RANDOM: the text "
              "it writes is noise; use it to see the system work, not to read answers.", flush=True)
        cfg = deployment_from(ensure_demo_checkpoints(), None)
    if args.dtype:
        cfg = cfg.with_overrides(models=tuple(ModelEntry(m.name, m.path, args.dtype) for m in cfg.models))
    for flag in ("max_waiting_requests", "max_waiting_tokens", "max_queue_delay_s"):  # 0: no limit
        v = getattr(args, flag)
        if v is not None and v <= 0:
            cfg = dataclasses.replace(cfg, **{flag: None})
            setattr(args, flag, None)
    return cfg.with_overrides(host=args.host, port=args.port, device=args.device,
                              kv_cache_memory=args.kv_cache_memory, scheduling_policy=args.scheduling_policy,
                              max_num_batched_tokens=args.max_num_batched_tokens, max_num_seqs=args.max_num_seqs,
                              max_tokens_limit=args.max_tokens_limit, api_key=args.api_key,
                              preemption_mode=args.preemption_mode, swap_space=args.swap_space,
                              max_waiting_requests=args.max_waiting_requests,
                              max_waiting_tokens=args.max_waiting_tokens,
                              max_queue_delay_s=args.max_queue_delay_s,
                              max_sequences_per_request=args.max_sequences_per_request,
                              max_request_body=args.max_request_body,
                              allow_request_chat_template=args.allow_request_chat_template,
                              max_resident_models=args.max_resident_models, weights_memory=args.weights_memory,
                              host_weight_cache=args.host_weight_cache, residency_policy=args.residency_policy,
                              threads=args.threads, concurrent_models=args.concurrent_models,
                              routing_policy=args.routing_policy)


def run_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from seallm.server.app import build_app

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = deployment_from_args(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    app = build_app(cfg)
    config = uvicorn.Config(app, host=cfg.host, port=cfg.port, log_level=args.log_level.lower(),
                            timeout_graceful_shutdown=5, access_log=False,
                            # Longer than clients' pooled keep-alive (aiohttp 15 s, httpx 5 s), so the
                            # server never closes an idle connection a client is just reusing.
                            timeout_keep_alive=65,
                            loop="auto", http="auto")  # uvloop and httptools when installed
    server = uvicorn.Server(config)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    return 0 if server.started else 1
