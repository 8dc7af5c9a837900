"""Linear layers on the CPU through oneDNN with weights packed once at load time.

``F.linear`` on the CPU reorders (packs) the weight matrix into the GEMM kernel's blocked
layout on every call, and for fp32 it goes through MKL, which takes a slow code path on
AMD CPUs. vLLM's CPU backend packs each weight once into oneDNN's layout and calls oneDNN's
matmul with it; :func:`pack_linear_weight` does the same through PyTorch's own oneDNN ops
(``torch.ops.mkldnn._reorder_linear_weight`` / ``_linear_pointwise``, the ones inductor's
weight freezing uses), so no extra library is needed. Measured on the engine's shapes
(``benchmarks/results/linear_packing.json``): 1.3-3x faster for decode batches, 1.1-1.7x
for prefill chunks, fp32 and bf16.

Results equal ``F.linear`` up to the GEMM's summation order (fp32: ~1e-4 absolute on
unit-scale inputs). ``SEALLM_CPU_PACKED_LINEAR=0`` turns packing off (plain ``F.linear``).
"""

from __future__ import annotations

import functools
import os

import torch
import torch.nn.functional as F

_PACKED_DTYPES = (torch.float32, torch.bfloat16)


def packing_enabled() -> bool:
    """False when the environment sets ``SEALLM_CPU_PACKED_LINEAR=0`` (or false/no/off)."""
    return os.environ.get("SEALLM_CPU_PACKED_LINEAR", "1").strip().lower() not in ("0", "false", "no", "off")


@functools.lru_cache(maxsize=None)
def packing_supported(dtype: torch.dtype) -> bool:
    """Whether this PyTorch build and CPU run oneDNN linear layers of ``dtype`` (bf16 needs
    AVX-512 BF16/AMX support as oneDNN sees it)."""
    if dtype not in _PACKED_DTYPES or not torch.backends.mkldnn.is_available():
        return False
    if dtype == torch.bfloat16 and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return False
    try:  # a tiny end-to-end check: some builds register the ops but cannot run them
        w = torch.ones(8, 16, dtype=dtype)
        y = torch.ops.mkldnn._linear_pointwise(torch.ones(2, 16, dtype=dtype), torch.ops.mkldnn._reorder_linear_weight(w, None),
                                               None, "none", [], "")
        return bool((y.float() == 16.0).all())
    except (RuntimeError, AttributeError):
        return False


def pack_linear_weight(weight: torch.Tensor) -> torch.Tensor:
    """``weight`` [out, in] packed for :func:`linear` when packing is enabled and supported
    for its dtype on this CPU; else ``weight`` itself. A packed weight is an opaque oneDNN
    tensor (``is_mkldnn``): only :func:`linear` can use it."""
    if (weight.device.type != "cpu" or weight.dim() != 2 or weight.is_mkldnn or not packing_enabled()
            or not packing_supported(weight.dtype)):
        return weight
    return torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), None)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``x @ weight.T + bias``. Shapes: ``x`` [T, in] (2-D, contiguous rows for a packed
    weight), ``weight`` [out, in] plain or from :func:`pack_linear_weight`, ``bias`` [out]
    -> [T, out]."""
    if weight.is_mkldnn:
        return torch.ops.mkldnn._linear_pointwise(x.contiguous(), weight, bias, "none", [], "")
    return F.linear(x, weight, bias)
