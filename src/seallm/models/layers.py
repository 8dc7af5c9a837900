"""Building blocks of Llama-family decoders: RMSNorm and rotary position embeddings.

:func:`add_rms_norm` and :func:`rope_` run as one fused native op each on the CPU when the
kernels are built (:func:`seallm.models.cpu_kernels.fused_ops`), else as the eager ops
below; both forms round where ``transformers`` rounds.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from seallm.models.cpu_kernels import fused_ops


def _fused(x: torch.Tensor) -> tuple | None:
    return fused_ops() if x.device.type == "cpu" else None


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm over the last dim, computed in fp32 then cast back (as ``transformers`` does).

    Shapes: ``x`` [..., D], ``weight`` [D] -> [..., D].
    """
    dtype = x.dtype
    xf = x.to(torch.float32)
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return weight * xf.to(dtype)


def add_rms_norm(residual: torch.Tensor, delta: torch.Tensor | None, weight: torch.Tensor,
                 eps: float) -> torch.Tensor:
    """``residual += delta`` in place (when ``delta`` is given), then :func:`rms_norm` of
    the new residual, into a new tensor.

    Shapes: ``residual``, ``delta`` [T, D] (unit stride in D), ``weight`` [D] -> [T, D].
    """
    ops = _fused(residual)
    if ops is not None and residual.stride(-1) == 1 and (delta is None or delta.stride(-1) == 1):
        out = torch.empty_like(residual)
        ops[0](residual, delta, weight, eps, out)
        return out
    if delta is not None:
        residual.add_(delta)
    return rms_norm(residual, weight, eps)


def rope_(x: torch.Tensor, positions: torch.Tensor, rope: "RotaryEmbedding", max_pos: int) -> None:
    """Rotate ``x`` [T, heads, head_dim] in place by the RoPE angles of ``positions`` [T]
    (int64, each <= ``max_pos``); ``x`` may be a strided view (e.g. the q and k columns of
    a fused qkv output) with unit stride in head_dim."""
    cos, sin = rope.tables(max_pos)
    ops = _fused(x)
    if ops is not None and x.stride(-1) == 1:
        ops[1](x, positions, cos, sin)
        return
    x.copy_(apply_rope(x, cos[positions].unsqueeze(1), sin[positions].unsqueeze(1)))


def rope_inv_freq(head_dim: int, theta: float, scaling: dict[str, Any] | None) -> torch.Tensor:
    """Inverse frequencies [head_dim/2] (fp32), with "linear" or "llama3" scaling.

    Source: RoFormer (Su et al. 2021); llama3 scaling as in Meta's Llama 3.1 reference code.

    Raises:
        ValueError: for an unknown ``rope_type``.
    """
    inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    if scaling is None:
        return inv
    kind = scaling.get("rope_type", scaling.get("type"))
    factor = float(scaling["factor"])
    if kind == "linear":
        return inv / factor
    if kind == "llama3":
        low, high = float(scaling["low_freq_factor"]), float(scaling["high_freq_factor"])
        old_len = float(scaling["original_max_position_embeddings"])
        low_wavelen, high_wavelen = old_len / low, old_len / high
        wavelen = 2 * math.pi / inv
        inv_l = torch.where(wavelen > low_wavelen, inv / factor, inv)
        smooth = (old_len / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * inv_l / factor + smooth * inv_l
        medium = ~(wavelen < high_wavelen) * ~(wavelen > low_wavelen)
        return torch.where(medium, smoothed, inv_l)
    raise ValueError(f"unsupported rope_type {kind!r}")


class RotaryEmbedding:
    """Cos/sin tables grown on demand (doubling) up to the positions seen.

    Args:
        head_dim: elements per head (all of it is rotated).
        theta: RoPE base.
        scaling: rope_scaling dict or None.
        dtype: dtype of q and k.
    """

    def __init__(self, head_dim: int, theta: float, scaling: dict[str, Any] | None, dtype: torch.dtype) -> None:
        self.inv_freq = rope_inv_freq(head_dim, theta, scaling)
        self.dtype = dtype
        self.device = torch.device("cpu")
        self._cos = torch.empty(0, head_dim, dtype=dtype)
        self._sin = torch.empty(0, head_dim, dtype=dtype)

    def _grow(self, n: int) -> None:
        size = max(n, 2 * self._cos.shape[0], 256)
        freqs = torch.arange(size, dtype=torch.float32)[:, None] * self.inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        self._cos = emb.cos().to(self.dtype).to(self.device)
        self._sin = emb.sin().to(self.dtype).to(self.device)

    def tables(self, max_pos: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The cos and sin tables [P, head_dim] (contiguous), grown to cover ``max_pos``."""
        if max_pos >= self._cos.shape[0]:
            self._grow(max_pos + 1)
        return self._cos, self._sin


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` [T, heads, head_dim] by ``cos``/``sin`` [T, 1, head_dim] (rotate-half form)."""
    half = x.shape[-1] // 2
    rot = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rot * sin
