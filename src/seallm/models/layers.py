"""Building blocks of Llama-family decoders: RMSNorm and rotary position embeddings."""

from __future__ import annotations

import math
from typing import Any

import torch


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm over the last dim, computed in fp32 then cast back (as ``transformers`` does).

    Shapes: ``x`` [..., D], ``weight`` [D] -> [..., D].
    """
    dtype = x.dtype
    xf = x.to(torch.float32)
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return weight * xf.to(dtype)


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

    def cos_sin(self, positions: torch.Tensor, max_pos: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Tables for ``positions`` [T] -> cos, sin [T, 1, head_dim] (broadcast over heads)."""
        if max_pos >= self._cos.shape[0]:
            self._grow(max_pos + 1)
        return self._cos[positions].unsqueeze(1), self._sin[positions].unsqueeze(1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` [T, heads, head_dim] by ``cos``/``sin`` [T, 1, head_dim] (rotate-half form)."""
    half = x.shape[-1] // 2
    rot = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rot * sin
