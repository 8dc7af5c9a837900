"""Native CPU kernels, JIT-compiled on first use with ``torch.utils.cpp_extension``.

:func:`paged_decode_attention` computes decode attention (one query token per sequence)
reading K/V in place from the KV pool's pages, instead of gathering every sequence's pages
into a padded tensor for ``F.scaled_dot_product_attention``. The C++ source is
``csrc/paged_attention_cpu.cpp``; it is compiled (``-O3 -march=native -fopenmp``, ~15 s
on two cores, needs a C++ compiler and ``ninja``) the first time a CPU model runs a decode
step, then cached under ``~/.cache/seallm/torch_extensions`` (override with
``SEALLM_TORCH_EXTENSIONS_DIR``; one build per CPU type and torch version, since
``-march=native`` code may not run elsewhere); later processes load it in ~0.2 s.

The same build holds the fused elementwise ops of ``csrc/fused_ops_cpu.cpp`` (residual add +
RMSNorm, in-place RoPE; :func:`fused_ops`), which replace five to ten small eager ops each.

Set ``SEALLM_CPU_KERNELS=0`` to disable the kernels (the SDPA path and eager ops are used instead).

Instruction set: the C++ source picks its SIMD path at compile time (AVX-512, else
AVX2+FMA+F16C, else a portable path the compiler auto-vectorizes). ``SEALLM_CPU_ISA``
chooses the build: ``native`` (default: the best path ``-march=native`` allows), ``avx2``
(``-march=native -mno-avx512f``: the code an AVX2-only machine gets, also on an AVX-512 one;
the same build as ``native`` on a CPU without AVX-512) or ``generic`` (the portable path).
Each choice is built and cached in its own directory and registers its op under its own
namespace (``torch.ops.seallm_cpu``, ``seallm_cpu_avx2``, ``seallm_cpu_generic``), so
several can be loaded in one process: :func:`paged_decode_attention`,
:func:`decode_attention_available` and :func:`kernel_isa` take an ``isa=`` argument that
overrides the environment. :func:`kernel_isa` says which SIMD path a build actually uses
(``"avx512"``, ``"avx2"`` or ``"generic"``; None if unavailable), e.g. ``avx2`` gives
``"generic"`` on a CPU without AVX2.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import sys
import threading
import time

import torch

logger = logging.getLogger("seallm")

_SRC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "csrc")
_SOURCES = [os.path.join(_SRC_DIR, "paged_attention_cpu.cpp"), os.path.join(_SRC_DIR, "fused_ops_cpu.cpp")]
ISA_CHOICES = ("native", "avx2", "generic")
# build variant -> (suffix of the op namespace, library and build directory; extra cflags)
_VARIANTS = {
    "native": ("", []),
    "avx2": ("_avx2", ["-mno-avx512f"]),  # also drops every AVX-512 extension (they imply avx512f)
    "generic": ("_generic", ["-DSEALLM_CPU_SIMD_GENERIC"]),
}
_locks = {v: threading.Lock() for v in _VARIANTS}  # one per build: different builds may run in parallel
# per build variant (see _variant): {"op": the loaded op or None (failed), "isa": its SIMD
# path, "fused": (add_rms_norm, rope_) ops of csrc/fused_ops_cpu.cpp, "compile_s": build/load time}
_state: dict[str, dict[str, object]] = {}


def kernels_enabled() -> bool:
    """False when the environment sets ``SEALLM_CPU_KERNELS=0`` (or false/no/off)."""
    return os.environ.get("SEALLM_CPU_KERNELS", "1").strip().lower() not in ("0", "false", "no", "off")


def isa_choice(isa: str | None = None) -> str:
    """``isa``, else ``SEALLM_CPU_ISA`` (default ``native``), validated.

    Raises:
        ValueError: if it is not one of :data:`ISA_CHOICES`.
    """
    choice = (isa if isa is not None else os.environ.get("SEALLM_CPU_ISA", "native")).strip().lower() or "native"
    if choice not in ISA_CHOICES:
        raise ValueError(f"SEALLM_CPU_ISA must be one of {', '.join(ISA_CHOICES)}, got {choice!r}")
    return choice


@functools.lru_cache(maxsize=1)
def _cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def _variant(isa: str | None = None) -> str:
    """The build an ISA choice uses: ``avx2`` is the ``native`` build where the CPU has no
    AVX-512 (``-mno-avx512f`` would change nothing there)."""
    choice = isa_choice(isa)
    if choice == "avx2" and "avx512f" not in _cpu_flags():
        return "native"
    return choice


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


def _build_dir(variant: str) -> str:
    root = os.environ.get("SEALLM_TORCH_EXTENSIONS_DIR",
                          os.path.join(os.path.expanduser("~"), ".cache", "seallm", "torch_extensions"))
    tag = f"py{sys.version_info.major}{sys.version_info.minor}_torch{torch.__version__}_{_cpu_tag()}"
    path = os.path.join(root, tag.replace("+", "_"), "paged_attention_cpu" + _VARIANTS[variant][0])
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


def _load(isa: str | None = None):
    """The compiled op of the build ``isa`` selects (see :func:`isa_choice`), or None if it
    cannot be built (warned once per build). Thread-safe."""
    variant = _variant(isa)
    st = _state.get(variant)
    if st is not None:
        return st["op"]
    with _locks[variant]:
        st = _state.get(variant)
        if st is not None:
            return st["op"]
        suffix, cflags = _VARIANTS[variant]
        t0 = time.perf_counter()
        op = kisa = fused = None
        try:
            _ensure_ninja_on_path()
            from torch.utils.cpp_extension import load

            load(
                name="seallm_paged_attention_cpu" + suffix,
                sources=_SOURCES,
                extra_cflags=["-O3", "-march=native", *cflags, f"-DSEALLM_OP_NS=seallm_cpu{suffix}", "-fopenmp",
                              "-DNDEBUG"],
                extra_ldflags=["-fopenmp"],
                build_directory=_build_dir(variant),
                is_python_module=False,
                verbose=os.environ.get("SEALLM_CPU_KERNELS_VERBOSE", "0") == "1",
            )
            ns = getattr(torch.ops, "seallm_cpu" + suffix)
            op, kisa = ns.paged_decode_attention, ns.isa()
            fused = (ns.add_rms_norm, ns.rope_)
        except Exception as e:  # no compiler, no ninja, build error, ...
            lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
            brief = " | ".join(lines[:1] + lines[-3:] if len(lines) > 4 else lines)[:800]
            logger.warning("seallm CPU attention kernel (%s build) unavailable, using the SDPA fallback: %s: %s",
                           variant, type(e).__name__, brief)
            logger.debug("CPU kernel build failure", exc_info=True)
            op = None
        st = {"op": op, "isa": kisa if op is not None else None, "fused": fused if op is not None else None,
              "compile_s": time.perf_counter() - t0}
        _state[variant] = st
        if op is not None:
            logger.info("seallm CPU attention kernel (%s build, %s path) ready in %.1f s", variant, kisa,
                        st["compile_s"])
        return op


def decode_attention_available(isa: str | None = None) -> bool:
    """Whether :func:`paged_decode_attention` can run: compiles the kernel on the first call
    (cached on disk afterwards). False if ``SEALLM_CPU_KERNELS=0`` or the build failed.
    ``isa`` overrides ``SEALLM_CPU_ISA``."""
    return kernels_enabled() and _load(isa) is not None


def kernel_isa(isa: str | None = None) -> str | None:
    """The SIMD path of the build ``isa`` (default ``SEALLM_CPU_ISA``) selects: ``"avx512"``,
    ``"avx2"`` or ``"generic"``, as compiled; None if the kernels are disabled or the build
    failed. Builds it if needed, like :func:`decode_attention_available`."""
    if not decode_attention_available(isa):
        return None
    return _state[_variant(isa)]["isa"]  # type: ignore[return-value]


def compile_seconds(isa: str | None = None) -> float | None:
    """Seconds the first :func:`decode_attention_available` (for that build) spent
    building/loading, if it ran."""
    st = _state.get(_variant(isa))
    return None if st is None else st["compile_s"]  # type: ignore[return-value]


def paged_decode_attention(q: torch.Tensor, k_rows: torch.Tensor, v_rows: torch.Tensor,
                           block_tables: torch.Tensor, context_lens: torch.Tensor, tokens_per_page: int,
                           num_kv_heads: int, scale: float, sliding_window: int | None = -1,
                           out: torch.Tensor | None = None, *, isa: str | None = None) -> torch.Tensor:
    """Decode attention straight from the KV pages (CPU; float32, bfloat16 or float16).

    Shapes: ``q`` [Bd, H, D] (last dim contiguous); ``k_rows``, ``v_rows`` one layer's page
    rows [num_pages, tokens_per_page * Hkv * D] with strides (page stride, 1), each row
    token-major [tokens_per_page, Hkv, D]; ``block_tables`` [Bd, Pmax] int64 (entries past a
    sequence's last page are ignored); ``context_lens`` [Bd] int64 (>= 1, keys
    ``[0, ctx)``) -> out [Bd, H, D] in q's dtype (written into ``out`` if given).
    GQA: query head h uses KV head ``h // (H // Hkv)``. ``sliding_window`` > 0 attends to
    the last ``sliding_window`` keys only; None or -1 means no window. ``isa`` picks the
    build (see :func:`isa_choice`; default ``SEALLM_CPU_ISA``).

    Raises:
        RuntimeError: if the kernel is unavailable (check :func:`decode_attention_available`)
            or the inputs are inconsistent (shapes, dtypes, page ids out of range).
        ValueError: if ``isa`` (or ``SEALLM_CPU_ISA``) is not a known choice.
    """
    op = _load(isa)
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


def fused_ops(isa: str | None = None) -> tuple | None:
    """The fused elementwise ops of ``csrc/fused_ops_cpu.cpp`` (``add_rms_norm``,
    ``rope_``; see :mod:`seallm.models.layers` for their use), built with the attention
    kernel; None if ``SEALLM_CPU_KERNELS=0`` or the build failed."""
    if not decode_attention_available(isa):
        return None
    return _state[_variant(isa)]["fused"]  # type: ignore[return-value]
