"""The native CPU paged decode-attention kernel against the gather + SDPA reference path."""

from __future__ import annotations

import random

import pytest
import torch

from seallm.models import cpu_kernels
from seallm.models.attention import build_metadata, kv_view, layer_page_views, paged_attention


@pytest.fixture(scope="module", autouse=True)
def kernel():
    if not cpu_kernels.kernels_enabled():
        pytest.skip("CPU kernels disabled by SEALLM_CPU_KERNELS=0")
    if not cpu_kernels.decode_attention_available():
        pytest.skip("the CPU attention kernel could not be built (no C++ compiler or ninja?)")


def _pool(num_pages, L, tpp, hkv, d, dtype, tail_elems, seed):
    """A random KV pool view with ``tail_elems`` unused elements at the end of each page."""
    esize = torch.tensor([], dtype=dtype).element_size()
    page_elems = L * 2 * tpp * hkv * d + tail_elems
    g = torch.Generator().manual_seed(seed)
    pool = torch.randn(num_pages * page_elems, generator=g).to(dtype).view(torch.uint8)
    return kv_view(pool, page_elems * esize, L, tpp, hkv, d, dtype)


def _case(ctxs, tpp, num_pages, seed):
    """Shuffled, non-contiguous block tables covering ``ctxs`` tokens, decode chunks."""
    rng = random.Random(seed)
    free = list(range(num_pages))
    rng.shuffle(free)
    chunks = []
    for c in ctxs:
        n = -(-c // tpp)
        table, free = free[:n], free[n:]
        chunks.append((c - 1, 1, table))
    return chunks


def _reference(q, k_rows, v_rows, meta, hkv, scale):
    """The fallback path of ``paged_attention``'s decode branch (gather + masked SDPA)."""
    nd, H, D = q.shape
    bt = meta.decode_block_tables
    kk = k_rows.index_select(0, bt.view(-1)).view(nd, -1, hkv, D).transpose(1, 2)
    vv = v_rows.index_select(0, bt.view(-1)).view(nd, -1, hkv, D).transpose(1, 2)
    o = torch.nn.functional.scaled_dot_product_attention(q.unsqueeze(2), kk, vv, attn_mask=meta.decode_mask,
                                                         scale=scale, enable_gqa=H != hkv)
    return o.squeeze(2)


TOL = {torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float16: 2e-3}


def _check(dtype, hkv, ratio, d, ctxs, tpp, window=None, tail=0, layer=1, seed=0):
    L = 3
    num_pages = sum(-(-c // tpp) for c in ctxs) + 7
    view = _pool(num_pages, L, tpp, hkv, d, dtype, tail, seed)
    k_rows, v_rows = layer_page_views(view)[layer]
    assert k_rows.stride(0) == L * 2 * tpp * hkv * d + tail
    chunks = _case(ctxs, tpp, num_pages, seed)
    meta = build_metadata(chunks, len(chunks), tpp, window)
    H = hkv * ratio
    g = torch.Generator().manual_seed(seed + 1)
    # q as a non-contiguous slice of a fused projection, as in the model
    qkv = torch.randn(len(ctxs), (H + 2 * hkv) * d, generator=g).to(dtype)
    q = qkv[:, : H * d].view(len(ctxs), H, d)
    scale = d ** -0.5
    out = cpu_kernels.paged_decode_attention(q, k_rows, v_rows, meta.decode_block_tables, meta.decode_context_lens,
                                             tpp, hkv, scale, window)
    assert out.shape == q.shape and out.dtype == dtype
    # reference in float32 on the same (rounded) values
    ref = _reference(q.float(), k_rows.float(), v_rows.float(), meta, hkv, scale)
    err = (out.float() - ref).abs().max().item()
    assert err <= TOL[dtype], f"max abs error {err}"
    if dtype != torch.float32:  # no worse than SDPA computing in the low precision itself
        low = _reference(q, k_rows, v_rows, meta, hkv, scale)
        assert err <= 2 * (low.float() - ref).abs().max().item() + 1e-3


CTXS = [1, 16, 17, 48, 5, 100, 33, 2, 64]  # includes 1 and exact multiples of 16


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("ratio", [1, 3, 4])
@pytest.mark.parametrize("d", [16, 32, 64, 128])
def test_matches_reference(dtype, ratio, d):
    _check(dtype, hkv=2, ratio=ratio, d=d, ctxs=CTXS, tpp=16, tail=24)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("d", [8, 24, 48, 80, 256])
def test_other_head_dims(dtype, d):
    # not 1/2/4/8 SIMD vectors (runtime loop) or not a multiple of the SIMD width (scalar path)
    _check(dtype, hkv=2, ratio=2, d=d, ctxs=CTXS, tpp=16, tail=8)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("window", [1, 7, 16, 40, 1000])
def test_sliding_window(dtype, window):
    _check(dtype, hkv=4, ratio=3, d=32, ctxs=CTXS + [300, 129], tpp=16, window=window)


@pytest.mark.parametrize("tpp", [1, 5, 21, 100])
def test_page_sizes_and_long_contexts(tpp):
    # tpp=100 with long contexts: blocks split inside a page; ctx = exact page multiples too
    _check(torch.float32, hkv=4, ratio=3, d=64, ctxs=[1, tpp, 2 * tpp, 3 * tpp + 1, 700, 1, 257], tpp=tpp,
           tail=40, layer=2, seed=tpp)


def test_large_scores_are_stable():
    # Softmax of widely spread scores (online max rescaling): scale up q.
    dtype, hkv, d, tpp = torch.float32, 2, 64, 16
    view = _pool(40, 1, tpp, hkv, d, dtype, 0, 3)
    k_rows, v_rows = layer_page_views(view)[0]
    chunks = _case([200, 31], tpp, 40, 3)
    meta = build_metadata(chunks, 2, tpp, None)
    q = torch.randn(2, 4, d, generator=torch.Generator().manual_seed(5)) * 30
    out = cpu_kernels.paged_decode_attention(q, k_rows, v_rows, meta.decode_block_tables, meta.decode_context_lens,
                                             tpp, hkv, d ** -0.5)
    ref = _reference(q, k_rows, v_rows, meta, hkv, d ** -0.5)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_few_sequences_split_heads():
    # One sequence with many KV heads: work is split across heads, results identical.
    _check(torch.float32, hkv=8, ratio=2, d=64, ctxs=[500], tpp=16)
    _check(torch.float32, hkv=6, ratio=1, d=64, ctxs=[77, 3], tpp=16)


def test_out_argument_and_errors():
    dtype, hkv, d, tpp = torch.float32, 2, 16, 4
    view = _pool(10, 1, tpp, hkv, d, dtype, 0, 0)
    k_rows, v_rows = layer_page_views(view)[0]
    bt = torch.tensor([[3, 1], [0, 0]])
    ctx = torch.tensor([6, 2])
    q = torch.randn(2, 4, d)
    out = torch.full((4, 4, d), float("nan"))
    r = cpu_kernels.paged_decode_attention(q, k_rows, v_rows, bt, ctx, tpp, hkv, 0.25, out=out[1:3])
    assert r.data_ptr() == out[1:3].data_ptr()
    assert torch.isnan(out[0]).all() and torch.isnan(out[3]).all() and torch.isfinite(out[1:3]).all()
    with pytest.raises(RuntimeError, match="out of range"):
        cpu_kernels.paged_decode_attention(q, k_rows, v_rows, torch.tensor([[3, 10], [0, 0]]), ctx, tpp, hkv, 0.25)
    with pytest.raises(RuntimeError, match="context length"):
        cpu_kernels.paged_decode_attention(q, k_rows, v_rows, bt, torch.tensor([9, 2]), tpp, hkv, 0.25)
    with pytest.raises(RuntimeError, match="multiple"):
        cpu_kernels.paged_decode_attention(torch.randn(2, 3, d), k_rows, v_rows, bt, ctx, tpp, hkv, 0.25)
    with pytest.raises(RuntimeError, match="dtype"):
        cpu_kernels.paged_decode_attention(q.double(), k_rows, v_rows, bt, ctx, tpp, hkv, 0.25)


@pytest.mark.parametrize("window", [None, 9])
def test_paged_attention_uses_kernel(monkeypatch, window):
    """``paged_attention`` with a mixed decode + prefill batch: same output with the kernel
    and with the SDPA fallback (SEALLM_CPU_KERNELS=0)."""
    dtype, L, tpp, hkv, d, H = torch.float32, 2, 8, 2, 32, 6
    num_pages = 30
    rng = random.Random(0)
    pages = list(range(num_pages))
    rng.shuffle(pages)
    chunks = [(20, 1, pages[0:3]), (0, 1, pages[3:4]), (39, 1, pages[4:9]), (8, 5, pages[9:11])]
    meta = build_metadata(chunks, 3, tpp, window)
    T = 3 + 5
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(T, n, d, generator=g) for n in (H, hkv, hkv))
    import seallm.models.attention as attention

    calls = []
    real = attention.cpu_paged_decode_attention
    monkeypatch.setattr(attention, "cpu_paged_decode_attention", lambda *a, **k: calls.append(1) or real(*a, **k))
    outs = []
    for env in ("1", "0"):
        monkeypatch.setenv("SEALLM_CPU_KERNELS", env)
        view = _pool(num_pages, L, tpp, hkv, d, dtype, 16, 11)  # same pool each time (K/V get written)
        layer = 1
        outs.append(paged_attention(q, k, v, view[:, layer], layer_page_views(view)[layer], meta, d ** -0.5))
    assert len(calls) == 1  # the kernel with SEALLM_CPU_KERNELS=1 only
    torch.testing.assert_close(outs[0], outs[1], atol=1e-5, rtol=1e-5)


def test_disabled_by_env(monkeypatch):
    monkeypatch.setenv("SEALLM_CPU_KERNELS", "0")
    assert not cpu_kernels.decode_attention_available()
    monkeypatch.setenv("SEALLM_CPU_KERNELS", "1")
    assert cpu_kernels.decode_attention_available()


def test_build_failure_falls_back_with_one_warning(monkeypatch, caplog):
    import torch.utils.cpp_extension as ext

    calls = []

    def broken_load(*args, **kwargs):
        calls.append(1)
        raise RuntimeError("Ninja is required to load C++ extensions")

    monkeypatch.setattr(cpu_kernels, "_state", {})  # forget the loaded op (restored afterwards)
    monkeypatch.setattr(ext, "load", broken_load)
    with caplog.at_level("WARNING", logger="seallm"):
        assert not cpu_kernels.decode_attention_available()
        assert not cpu_kernels.decode_attention_available()
    assert len(calls) == 1
    warnings = [r for r in caplog.records if "unavailable" in r.getMessage()]
    assert len(warnings) == 1 and "Ninja" in warnings[0].getMessage()
    with pytest.raises(RuntimeError, match="could not be built"):
        cpu_kernels.paged_decode_attention(torch.zeros(1, 1, 4), torch.zeros(1, 4), torch.zeros(1, 4),
                                           torch.zeros(1, 1, dtype=torch.long), torch.ones(1, dtype=torch.long),
                                           1, 1, 1.0)
