"""Native CPU kernels, JIT-compiled on first use with ``torch.utils.cpp_extension``.

:func:`paged_decode_attention` computes decode attention (one query token per sequence)
reading K/V in place from the KV pool's pages, instead of gathering every sequence's pages
into a padded tensor for ``F.scaled_dot_product_attention``. The C++ source is
``csrc/paged_attention_cpu.cpp``; it is compiled (``-O3 -march=native -fopenmp``, ~15 s
on two cores, needs a C++ compiler and ``ninja``) the first time a CPU model runs a decode
step, then cached under ``~/.cache/seallm/torch_extensions`` (override with
``SEALLM_TORCH_EXTENSIONS_DIR``; one build per CPU type and torch version, since
``-march=native`` code may not run elsewhere); later processes load it in ~0.2 s.

Set ``SEALLM_CPU_KERNELS=0`` to disable the kernels (the SDPA path is used instead).
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import threading
import time

import torch

logger = logging.getLogger("seallm")

_SRC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "csrc")
_SOURCES = [os.path.join(_SRC_DIR, "paged_attention_cpu.cpp")]
_lock = threading.Lock()
_state: dict[str, object] = {}  # "op": the loaded op or None (failed); "compile_s": build/load time


def kernels_enabled() -> bool:
    """False when the environment sets ``SEALLM_CPU_KERNELS=0`` (or false/no/off)."""
    return os.environ.get("SEALLM_CPU_KERNELS", "1").strip().lower() not in ("0", "false", "no", "off")


def _cpu_tag() -> str:
    """A short hash of the CPU model and flags: ``-march=native`` builds are per CPU type."""
    info = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("model name", "flags", "Features", "CPU part")):
                    info += line
                if line.strip() == "":  # first processor is enough
                    break
    except OSError:
        import platform

        info = platform.processor() + platform.machine()
    return hashlib.sha1(info.encode()).hexdigest()[:10]


def _build_dir() -> str:
    root = os.environ.get("SEALLM_TORCH_EXTENSIONS_DIR",
                          os.path.join(os.path.expanduser("~"), ".cache", "seallm", "torch_extensions"))
    tag = f"py{sys.version_info.major}{sys.version_info.minor}_torch{torch.__version__}_{_cpu_tag()}"
    path = os.path.join(root, tag.replace("+", "_"), "paged_attention_cpu")
    os.makedirs(path, exist_ok=True)
    return path


def _ensure_ninja_on_path() -> None:
    """torch's JIT build runs ``ninja`` from PATH; the pip ``ninja`` package puts it in the
    environment's bin folder, which is not on PATH when the venv is not activated."""
    import shutil

    if shutil.which("ninja"):
        return
    try:
        import ninja  # type: ignore[import-not-found]

        os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")
    except ImportError:
        pass


def _load():
    """The compiled op, or None if it cannot be built (warned once). Thread-safe."""
    if "op" in _state:
        return _state["op"]
    with _lock:
        if "op" in _state:
            return _state["op"]
        t0 = time.perf_counter()
        op = None
        try:
            _ensure_ninja_on_path()
            from torch.utils.cpp_extension import load

            load(
                name="seallm_paged_attention_cpu",
                sources=_SOURCES,
                extra_cflags=["-O3", "-march=native", "-fopenmp", "-DNDEBUG"],
                extra_ldflags=["-fopenmp"],
                build_directory=_build_dir(),
                is_python_module=False,
                verbose=os.environ.get("SEALLM_CPU_KERNELS_VERBOSE", "0") == "1",
            )
            op = torch.ops.seallm_cpu.paged_decode_attention
        except Exception as e:  # no compiler, no ninja, build error, ...
            lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
            brief = " | ".join(lines[:1] + lines[-3:] if len(lines) > 4 else lines)[:800]
            logger.warning("seallm CPU attention kernel unavailable, using the SDPA fallback: %s: %s",
                           type(e).__name__, brief)
            logger.debug("CPU kernel build failure", exc_info=True)
        _state["compile_s"] = time.perf_counter() - t0
        _state["op"] = op
        if op is not None:
            logger.info("seallm CPU attention kernel ready in %.1f s", _state["compile_s"])
        return op


def decode_attention_available() -> bool:
    """Whether :func:`paged_decode_attention` can run: compiles the kernel on the first call
    (cached on disk afterwards). False if ``SEALLM_CPU_KERNELS=0`` or the build failed."""
    return kernels_enabled() and _load() is not None


def compile_seconds() -> float | None:
    """Seconds the first :func:`decode_attention_available` spent building/loading, if it ran."""
    return _state.get("compile_s")  # type: ignore[return-value]


def paged_decode_attention(q: torch.Tensor, k_rows: torch.Tensor, v_rows: torch.Tensor,
                           block_tables: torch.Tensor, context_lens: torch.Tensor, tokens_per_page: int,
                           num_kv_heads: int, scale: float, sliding_window: int | None = -1,
                           out: torch.Tensor | None = None) -> torch.Tensor:
    """Decode attention straight from the KV pages (CPU; float32, bfloat16 or float16).

    Shapes: ``q`` [Bd, H, D] (last dim contiguous); ``k_rows``, ``v_rows`` one layer's page
    rows [num_pages, tokens_per_page * Hkv * D] with strides (page stride, 1), each row
    token-major [tokens_per_page, Hkv, D]; ``block_tables`` [Bd, Pmax] int64 (entries past a
    sequence's last page are ignored); ``context_lens`` [Bd] int64 (>= 1, keys
    ``[0, ctx)``) -> out [Bd, H, D] in q's dtype (written into ``out`` if given).
    GQA: query head h uses KV head ``h // (H // Hkv)``. ``sliding_window`` > 0 attends to
    the last ``sliding_window`` keys only; None or -1 means no window.

    Raises:
        RuntimeError: if the kernel is unavailable (check :func:`decode_attention_available`)
            or the inputs are inconsistent (shapes, dtypes, page ids out of range).
    """
    op = _load()
    if op is None:
        raise RuntimeError("the seallm CPU attention kernel could not be built")
    if q.stride(-1) != 1:
        q = q.contiguous()
    if block_tables.dtype != torch.long or not block_tables.is_contiguous():
        block_tables = block_tables.to(torch.long).contiguous()
    if context_lens.dtype != torch.long or not context_lens.is_contiguous():
        context_lens = context_lens.to(torch.long).contiguous()
    if out is None:
        out = torch.empty(q.shape, dtype=q.dtype)
    window = -1 if sliding_window is None or sliding_window <= 0 else int(sliding_window)
    op(q, k_rows, v_rows, block_tables, context_lens, int(tokens_per_page), int(num_kv_heads), float(scale),
       window, out)
    return out
