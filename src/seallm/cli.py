"""The ``seallm`` command: ``generate``, ``serve``, ``bench``."""

from __future__ import annotations

import argparse
import sys


def _parse_models(items: list[str]) -> dict[str, str]:
    models = {}
    for it in items or []:
        name, sep, path = it.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"--model expects NAME=PATH, got {it!r}")
        if name in models:
            raise SystemExit(f"--model {name!r} given twice")
        models[name] = path
    return models


def _add_generate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="complete one prompt offline and print the text")
    p.add_argument("--model", action="append", required=True, metavar="NAME=PATH",
                   help="a Hugging Face checkpoint folder (repeatable; the first one answers)")
    p.add_argument("--prompt", required=True, help="prompt text")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--stop", action="append", default=None, help="stop string (repeatable)")
    p.add_argument("--ignore-eos", action="store_true")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--kv-cache-memory", default="1GiB")
    p.set_defaults(func=_generate)


def _generate(args: argparse.Namespace) -> int:
    from seallm import LLM, SamplingParams
    from seallm.models.config import CheckpointError

    models = _parse_models(args.model)
    try:
        params = SamplingParams(max_tokens=args.max_tokens, temperature=args.temperature, top_p=args.top_p,
                                top_k=args.top_k, seed=args.seed, stop=args.stop or (), ignore_eos=args.ignore_eos)
        llm = LLM(models=models, device=args.device, dtype=args.dtype, kv_cache_memory=args.kv_cache_memory)
        out = llm.generate([args.prompt], params, model=next(iter(models)))[0]
    except (CheckpointError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(out.text)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``seallm`` command line: every subcommand's parser."""
    parser = argparse.ArgumentParser(prog="seallm", description="Serve many LLMs on shared accelerators.")
    parser.add_argument("--version", action="version", version=f"seallm {__import__('seallm').__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_generate(sub)
    from seallm.demo import add_demo_parser
    from seallm.server.cli import add_serve_parser

    from seallm.profiling import add_profile_parser
    from seallm.simulate import add_simulate_parser

    add_serve_parser(sub)
    add_demo_parser(sub)
    add_profile_parser(sub)
    try:
        from seallm.bench.cli import add_bench_parser
    except ImportError:
        pass
    else:
        from seallm.place import add_place_parser

        add_bench_parser(sub)
        add_simulate_parser(sub)
        add_place_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
