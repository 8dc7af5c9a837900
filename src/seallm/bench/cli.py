"""``seallm bench``: replay a trace or synthetic workload against an OpenAI-compatible server.

``add_bench_parser(subparsers)`` registers the subcommand; ``run_bench(args)`` runs it.
See ``docs/bench.md``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import math
import sys

from seallm.bench.baseline import AloneOverride
from seallm.bench.calibrate import CalibrationConfig
from seallm.bench.client import ClientConfig
from seallm.bench.config import BenchConfig
from seallm.bench.prompts import PromptConfig
from seallm.bench.workload import AzureWorkload, LengthConfig, SyntheticWorkload

__all__ = ["add_bench_parser", "add_workload_args", "config_from_args", "run_bench", "workload_from_args"]


class _ArgError(ValueError):
    pass


def _pairs(items: list[str] | None, flag: str) -> list[tuple[str, str]]:
    out = []
    for it in items or []:
        key, sep, val = it.partition("=")
        if not sep or not key or not val:
            raise _ArgError(f"{flag} expects A=B, got {it!r}")
        out.append((key, val))
    return out


def _model_values(items: list[str] | None, flag: str) -> dict[str, float]:
    """``[MODEL=]SECONDS`` items -> {model or "*": seconds}."""
    out: dict[str, float] = {}
    for it in items or []:
        model, sep, val = it.rpartition("=")
        key = model if sep else "*"
        if sep and not model:
            raise _ArgError(f"{flag} expects [MODEL=]SECONDS, got {it!r}")
        try:
            v = float(val)
        except ValueError:
            raise _ArgError(f"{flag} expects [MODEL=]SECONDS, got {it!r}") from None
        if not (v >= 0 and math.isfinite(v)):
            raise _ArgError(f"{flag} needs a value >= 0, got {it!r}")
        out[key] = v
    return out


def add_workload_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    """Add the workload options shared by ``seallm bench`` and ``seallm simulate``
    (``required``: one of --trace / --models must be given)."""
    w = p.add_argument_group("workload (give --trace or --models)")
    src = w.add_mutually_exclusive_group(required=required)
    src.add_argument("--trace", action="append", metavar="TRACE=MODEL",
                     help="replay an Azure 2023 trace (chat|conv|code, or a CSV path) as MODEL's traffic; repeatable")
    src.add_argument("--models", nargs="+", metavar="MODEL",
                     help="synthetic workload over these models, most popular first")
    w.add_argument("--window-start", type=float, default=0.0, metavar="S",
                   help="trace replay: start of the window, seconds of trace time (default 0)")
    w.add_argument("--duration", type=float, default=None, metavar="S",
                   help="trace: window length in trace seconds (default: to the end); synthetic: seconds of arrivals")
    w.add_argument("--rate-scale", type=float, default=1.0,
                   help="arrival-rate multiplier (0.5 = half the rate; trace inter-arrival times are divided by it)")
    w.add_argument("--num-requests", type=int, default=None, metavar="N",
                   help="send at most the first N requests (synthetic: N requests if --duration is not given)")
    w.add_argument("--rate", type=float, default=None, metavar="RPS",
                   help="synthetic: total arrival rate over all models, requests/s")
    w.add_argument("--alpha", type=float, default=0.0,
                   help="synthetic: power-law popularity, rate_i ~ (i+1)^-alpha (default 0: equal rates)")
    w.add_argument("--arrival", choices=("poisson", "gamma"), default="poisson", help="synthetic arrival process")
    w.add_argument("--cv", type=float, default=1.0, help="synthetic gamma: inter-arrival coefficient of variation")
    w.add_argument("--length-dist", action="append", metavar="[MODEL=]NAME",
                   help="synthetic lengths: sharegpt|arxiv|bwb (or a CSV path), for all models or one; default sharegpt")
    w.add_argument("--length-scale", type=float, default=1.0, help="multiply input and output lengths (default 1)")
    w.add_argument("--max-input-len", type=int, default=None, metavar="TOKENS", help="cap prompt lengths")
    w.add_argument("--max-output-len", type=int, default=None, metavar="TOKENS", help="cap output lengths")
    w.add_argument("--seed", type=int, default=0, help="seed for synthetic workloads and prompts (default 0)")


def add_bench_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``bench`` subcommand (``set_defaults(func=run_bench)``) and return its parser."""
    p = subparsers.add_parser(
        "bench", help="replay a trace or synthetic workload against an OpenAI-compatible endpoint",
        description="Open-loop load client for /v1/completions: Azure LLM trace 2023 replay or synthetic "
                    "Poisson/Gamma arrivals; reports TTFT, TPOT, E2E, normalized latency, SLO attainment.",
    )
    add_workload_args(p)

    pr = p.add_argument_group("prompts")
    pr.add_argument("--token-id-range", nargs=2, type=int, default=(10, 500), metavar=("LOW", "HIGH"),
                    help="token-id prompts draw ids in [LOW, HIGH) (default 10 500)")
    pr.add_argument("--tokenizer", default=None, metavar="PATH",
                    help="send text prompts calibrated to the token count with this local tokenizer")

    c = p.add_argument_group("client")
    c.add_argument("--base-url", default="http://127.0.0.1:8000", help="server root (default http://127.0.0.1:8000)")
    c.add_argument("--api-key", default=None, help="sent as 'Authorization: Bearer KEY'")
    c.add_argument("--timeout", type=float, default=None, metavar="S",
                   help="bound on the whole replay, s (default: last arrival + 600)")
    c.add_argument("--request-timeout", type=float, default=None, metavar="S", help="bound on one request, s")
    c.add_argument("--max-concurrency", type=int, default=None, metavar="N", help="most requests in flight")
    c.add_argument("--no-ignore-eos", action="store_true", help="do not send ignore_eos: true")
    c.add_argument("--slo-class", default=None, metavar="NAME",
                   help="send slo_class NAME with every request (seallm extension: e.g. chatbot, coding); "
                        "the records keep the SLO planner's admission verdict")
    c.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    m = p.add_argument_group("metrics")
    m.add_argument("--slo-scales", nargs="+", type=float, default=[5.0, 10.0], metavar="SCALE",
                   help="SLO scales: E2E <= scale x served-alone latency (default 5 10)")
    m.add_argument("--alone-ttft-base", action="append", metavar="[MODEL=]S",
                   help="served-alone TTFT intercept, s (default 0 when the others are given)")
    m.add_argument("--alone-ttft-per-token", action="append", metavar="[MODEL=]S",
                   help="served-alone TTFT per input token, s")
    m.add_argument("--alone-tpot", action="append", metavar="[MODEL=]S", help="served-alone TPOT, s")
    m.add_argument("--no-calibrate", action="store_true",
                   help="do not measure served-alone latency (no SLO attainment for models without --alone-*)")
    m.add_argument("--calibration-requests", type=int, default=4, metavar="N",
                   help="measured calibration requests per model (default 4, after 1 warm-up)")
    m.add_argument("--calibration-output-len", type=int, default=16, metavar="TOKENS",
                   help="output tokens per calibration request (default 16)")

    o = p.add_argument_group("output")
    o.add_argument("--output-dir", default=None, metavar="DIR", help="default results/bench-<timestamp>")
    o.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.set_defaults(func=run_bench)
    return p


def workload_from_args(args: argparse.Namespace) -> AzureWorkload | SyntheticWorkload:
    """The workload described by :func:`add_workload_args` options. Raises ``ValueError``."""
    lengths = LengthConfig(args.length_scale, args.max_input_len, args.max_output_len)
    if args.trace:
        if args.rate is not None or args.length_dist:
            raise _ArgError("--rate and --length-dist apply to --models (synthetic) workloads only")
        workload = AzureWorkload(
            traces=tuple(_pairs(args.trace, "--trace")), window_start_s=args.window_start,
            duration_s=args.duration, rate_scale=args.rate_scale, num_requests=args.num_requests, lengths=lengths,
        )
    else:
        if args.rate is None:
            raise _ArgError("--models needs --rate (total requests/s)")
        if args.window_start:
            raise _ArgError("--window-start applies to --trace workloads only")
        dists = []
        for it in args.length_dist or []:
            model, sep, name = it.partition("=")
            dists.append((model, name) if sep else ("*", it))
        workload = SyntheticWorkload(
            models=tuple(args.models), total_rate=args.rate, duration_s=args.duration,
            num_requests=args.num_requests, alpha=args.alpha, arrival=args.arrival, cv=args.cv,
            length_dists=tuple(dists) or (("*", "sharegpt"),), rate_scale=args.rate_scale, lengths=lengths,
        )
    return workload


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    """Build a :class:`BenchConfig` from parsed ``bench`` arguments. Raises ``ValueError``."""
    workload = workload_from_args(args)
    base = _model_values(args.alone_ttft_base, "--alone-ttft-base")
    per_tok = _model_values(args.alone_ttft_per_token, "--alone-ttft-per-token")
    tpot = _model_values(args.alone_tpot, "--alone-tpot")
    alone = {k: AloneOverride(base.get(k), per_tok.get(k), tpot.get(k)) for k in {*base, *per_tok, *tpot}}
    out_dir = args.output_dir or f"results/bench-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    return BenchConfig(
        workload=workload,
        client=ClientConfig(
            base_url=args.base_url, api_key=args.api_key, timeout_s=args.timeout,
            request_timeout_s=args.request_timeout, max_concurrency=args.max_concurrency,
            progress=not args.no_progress, ignore_eos=not args.no_ignore_eos,
            extra_body=(("slo_class", args.slo_class),) if args.slo_class else (),
        ),
        prompts=PromptConfig(args.token_id_range[0], args.token_id_range[1], args.tokenizer),
        calibration=CalibrationConfig(enabled=not args.no_calibrate, requests_per_model=args.calibration_requests,
                                      output_len=args.calibration_output_len),
        alone=alone,
        slo_scales=tuple(args.slo_scales),
        output_dir=out_dir,
        plots=not args.no_plots,
        seed=args.seed,
    )


def run_bench(args: argparse.Namespace) -> int:
    """Run ``seallm bench``; print the table and where files went.

    Returns 0 if at least one request completed, 1 if none did, 2 for invalid arguments.
    """
    from seallm.bench.runner import run_benchmark
    from seallm.bench.table import format_table

    try:
        config = config_from_args(args)
        result = run_benchmark(config)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_table(result.metrics, config.slo_scales))
    for m, a in result.alone.items():
        if a is None:
            print(f"served-alone latency of {m}: unknown (no SLO attainment)")
        else:
            print(f"served-alone latency of {m}: TTFT {a.ttft_base_s * 1e3:.2f} ms + "
                  f"{a.ttft_per_token_s * 1e3:.4f} ms/input token, TPOT {a.tpot_s * 1e3:.2f} ms"
                  + (f" (from {a.samples} calibration requests)" if a.samples else " (given)"))
    errors: dict[str, int] = {}
    for r in result.records:
        if r.error:
            errors[r.error.split(":")[0]] = errors.get(r.error.split(":")[0], 0) + 1
    for e, n in sorted(errors.items(), key=lambda kv: -kv[1])[:5]:
        print(f"failed: {n} x {e}")
    if result.files:
        print(f"wrote {len(result.files)} files to {config.output_dir}")
    return 0 if result.metrics.overall.num_completed > 0 else 1
