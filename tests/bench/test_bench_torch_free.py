"""Layer rule: ``seallm.bench`` never imports torch, and transformers only lazily (--tokenizer)."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import seallm.bench

BENCH = pathlib.Path(seallm.bench.__file__).parent


def test_importing_every_bench_module_pulls_in_neither_torch_nor_transformers():
    mods = sorted(p.stem for p in BENCH.glob("*.py") if p.stem != "__init__")
    code = (
        "import importlib, sys\n"
        f"for m in {mods!r}: importlib.import_module('seallm.bench.' + m)\n"
        "import seallm.bench as b; b.run_benchmark; b.BenchConfig\n"
        "bad = [m for m in ('torch', 'transformers') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_no_module_level_heavy_imports():
    for path in BENCH.glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            roots = {n.split(".")[0] for n in names}
            assert "torch" not in roots, f"{path.name} imports torch"
        for node in tree.body:  # module level only
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                mod = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
                assert (mod or "").split(".")[0] not in ("transformers", "matplotlib"), path.name


def test_scheduler_simulator_and_cost_layers_are_torch_free():
    code = (
        "import sys\n"
        "import seallm.core, seallm.kv, seallm.cost, seallm.sched, seallm.engine.core, seallm.sim, seallm.sim.runner\n"
        "import seallm.engine.loop, seallm.engine.replica, seallm.engine.requests, seallm.engine.handle\n"
        "import seallm.sim.replica, seallm.cluster.router, seallm.cluster.catalog, seallm.cluster.placement\n"
        "import seallm.cluster.replacement, seallm.sim.replacement\n"
        "import seallm.cluster.baselines, seallm.cluster.config, seallm.sim.cluster, seallm.sim.compare\n"
        "import seallm.sched.muxserve, seallm.place\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
