"""Fused CPU elementwise ops (residual add + RMSNorm, in-place RoPE) against the eager
forms in ``seallm.models.layers``, for each dtype and each build of the kernels."""

from __future__ import annotations

import pytest
import torch

from seallm.models import cpu_kernels
from seallm.models.layers import RotaryEmbedding, apply_rope, rms_norm

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
ULP = {torch.float32: 2.0 ** -23, torch.bfloat16: 2.0 ** -7, torch.float16: 2.0 ** -10}


@pytest.fixture(params=cpu_kernels.ISA_CHOICES)
def ops(request):
    if not cpu_kernels.kernels_enabled():
        pytest.skip("CPU kernels disabled by SEALLM_CPU_KERNELS=0")
    got = cpu_kernels.fused_ops(request.param)
    if got is None:
        pytest.skip(f"the {request.param} build of the CPU kernels is unavailable")
    return got


def _close(got: torch.Tensor, ref: torch.Tensor, ulps: float) -> None:
    """Within ``ulps`` units in the last place of the dtype, relative to each value (and of
    the largest value near zero): the two forms sum in different orders."""
    g, r = got.double(), ref.double()
    tol = ulps * ULP[got.dtype] * (r.abs() + 1e-3 * r.abs().max())
    assert ((g - r).abs() <= tol).all(), (g - r).abs().max()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_delta", [False, True])
@pytest.mark.parametrize("rows", [1, 5, 300])
def test_add_rms_norm_matches_eager(ops, dtype, with_delta, rows):
    g = torch.Generator().manual_seed(rows)
    d = 96
    res = (torch.randn(rows, d, generator=g) * 3).to(dtype)
    delta = torch.randn(rows, d, generator=g).to(dtype) if with_delta else None
    w = (torch.rand(d, generator=g) + 0.5).to(dtype)
    ref_res = res + delta if with_delta else res.clone()
    ref = rms_norm(ref_res, w, 1e-6)
    out = torch.empty_like(res)
    ops[0](res, delta, w, 1e-6, out)
    assert torch.equal(res, ref_res)  # the in-place residual add rounds as `residual + delta` does
    # one rounding of the normalized value can land on the other side; then the weight product
    _close(out, ref, 4 if dtype == torch.float32 else 2.01)


def test_add_rms_norm_rejects_mismatched_shapes(ops):
    res = torch.randn(4, 8)
    with pytest.raises(RuntimeError, match="delta must match"):
        ops[0](res, torch.randn(4, 7), torch.ones(8), 1e-6, torch.empty_like(res))
    with pytest.raises(RuntimeError, match="weight must be"):
        ops[0](res, None, torch.ones(8, dtype=torch.bfloat16), 1e-6, torch.empty_like(res))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("head_dim", [64, 128, 6])
def test_rope_in_place_on_a_strided_view_matches_eager(ops, dtype, head_dim):
    g = torch.Generator().manual_seed(head_dim)
    T, H, Hkv = 9, 4, 2
    rope = RotaryEmbedding(head_dim, 10000.0, None, dtype)
    positions = torch.randint(0, 700, (T,), generator=g)
    qkv = torch.randn(T, (H + 2 * Hkv) * head_dim, generator=g).to(dtype)
    view = qkv[:, : (H + Hkv) * head_dim].view(T, H + Hkv, head_dim)  # q and k columns, row stride of qkv
    cos, sin = rope.tables(int(positions.max()))
    ref = apply_rope(view.clone(), cos[positions].unsqueeze(1), sin[positions].unsqueeze(1))
    v_before = qkv[:, (H + Hkv) * head_dim:].clone()
    ops[1](view, positions, cos, sin)
    if dtype == torch.float32:  # fused multiply-adds: a few ulps of the terms (a sum may cancel)
        assert (view - ref).abs().max() <= 4 * ULP[dtype] * ref.abs().max()
    else:
        assert torch.equal(view, ref)  # each product and the sum rounded as the eager form does
    assert torch.equal(qkv[:, (H + Hkv) * head_dim:], v_before)  # v untouched


def test_rope_rejects_positions_outside_the_tables(ops):
    rope = RotaryEmbedding(8, 10000.0, None, torch.float32)
    cos, sin = rope.tables(10)
    x = torch.randn(2, 1, 8)
    with pytest.raises(RuntimeError, match="outside the tables"):
        ops[1](x, torch.tensor([0, cos.shape[0]]), cos, sin)
