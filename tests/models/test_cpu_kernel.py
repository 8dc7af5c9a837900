"""The native CPU paged decode-attention kernel against a float64 reference, on each SIMD
path the machine can run (AVX-512, AVX2, portable), with error bounds derived from the fp32
arithmetic of the kernel."""

from __future__ import annotations

import contextlib
import math
import random
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from seallm.models import cpu_kernels
from seallm.models.attention import build_metadata, kv_view, layer_page_views, paged_attention

PATHS = ["avx512", "avx2", "generic"]  # SIMD paths of the kernel source (cpu_kernels.kernel_isa)
_path_choice: dict[str, str | None] = {}  # path -> the SEALLM_CPU_ISA choice whose build uses it


@pytest.fixture(scope="module", autouse=True)
def kernel():
    if not cpu_kernels.kernels_enabled():
        pytest.skip("CPU kernels disabled by SEALLM_CPU_KERNELS=0")
    # Build every variant at once (one compiler process each, ~15 s on two cores; cached on
    # disk afterwards); "avx2" is the native build on a CPU without AVX-512.
    with ThreadPoolExecutor(len(cpu_kernels.ISA_CHOICES)) as ex:
        isas = dict(zip(cpu_kernels.ISA_CHOICES, ex.map(cpu_kernels.kernel_isa, cpu_kernels.ISA_CHOICES)))
    if isas["native"] is None:
        pytest.skip("the CPU attention kernel could not be built (no C++ compiler or ninja?)")
    for path in PATHS:  # the native build where it takes that path, else the dedicated one
        _path_choice[path] = next((c for c in cpu_kernels.ISA_CHOICES if isas[c] == path), None)


@pytest.fixture(params=PATHS)
def isa(request) -> str:
    """The SEALLM_CPU_ISA choice that runs the kernel on SIMD path ``request.param``."""
    path = request.param
    if path == "avx512" and "avx512f" not in cpu_kernels._cpu_flags():
        pytest.skip("this CPU has no avx512f")
    choice = _path_choice.get(path)
    if choice is None:
        pytest.skip(f"no {path} build of the CPU kernel on this machine (CPU or compiler lacks it)")
    return choice


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


# Error bound of the kernel, per output element, against the exact (float64) attention of the
# same stored values. The kernel computes o_d = sum_j p_j v_jd / sum_j p_j in fp32 (unit
# roundoff u = 2^-24), p_j = exp(s_j - max), s_j = (scale q) . k_j, with online softmax over
# n keys. With w_j the exact softmax weights, A_j = scale sum_i |q_i k_ji| (magnitude of
# score j's terms) and D the head dim, to first order:
#   * score j is a D-term dot product of the rounded pre-scaled q: |ds_j| <= g(D + 1) A_j.
#     exp(s + ds) = exp(s)(1 + ds), and relative weight errors eps_j move the output by
#     sum_j w_j eps_j (v_jd - o_d)  ->  g(D + 1) sum_j w_j A_j |v_jd - o_d|;
#   * softmax arithmetic: exp ~2 ulp, the roundings of (s_j - max) and of the rescale factors
#     (<= n of them; a rounding of x weighted by exp(-x) is <= u/e): relative weight errors
#     <= (3 + 1.4 g'(n)) u  ->  (3 + 1.4 g'(n)) u sum_j w_j |v_jd - o_d|;
#   * the two accumulations, sum_j p_j v_jd and sum_j p_j (n terms + n rescales each):
#     g(2n) (sum_j w_j |v_jd| + |o_d|); the final 1/sum scaling: 2 u |o_d|.
# (|v_jd - o_d| <= |v_jd| + |o_d| turns every sum into a matrix product.) g(k) = k u is the
# worst case over every summation order (Higham, Accuracy and Stability of Numerical
# Algorithms, 3.1), far above the errors actually seen; the rounding errors being independent
# and mean-zero, we use the probabilistic bound g(k) = lambda sqrt(k) u (Higham & Mary, SIAM
# J. Sci. Comput. 41(5), 2019; g'(n) = g(n) / u), which holds with probability
# >= 1 - 2 k exp(-lambda^2 / 2) per quantity; lambda = 6. The bound grows with the score
# magnitudes (large q), the context and |v|, and holds for any SIMD width or summation order
# (AVX-512, AVX2 and portable paths alike). Measured: fp32 errors are <= 2.5% of it on each
# path; dropping one key exceeds it >= 100x.
# bfloat16 / float16 outputs add the final round-to-nearest: u_low (|o_ref| + bound), plus half
# the smallest float16 subnormal (2^-25) for float16 results below the normal range (these
# errors reach ~98% of that term: truncating instead of rounding exceeds it ~2x).
U32 = 2.0 ** -24
LAMBDA = 6.0
U_LOW = {torch.float32: 0.0, torch.bfloat16: 2.0 ** -8, torch.float16: 2.0 ** -11}
ABS_LOW = {torch.float32: 0.0, torch.bfloat16: 0.0, torch.float16: 2.0 ** -25}


@contextlib.contextmanager
def _one_thread():
    """Small tensor ops run faster on one thread (no OpenMP barriers, notably on a busy CI)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _reference64(q, k_rows, v_rows, meta, hkv, scale):
    """Exact decode attention (float64) on the stored values, and the kernel's error bound
    (see above) per output element: (ref [Bd, H, D], bound [Bd, H, D])."""
    with _one_thread():
        return _reference64_impl(q, k_rows, v_rows, meta, hkv, scale)


def _reference64_impl(q, k_rows, v_rows, meta, hkv, scale):
    nd, H, D = q.shape
    G = H // hkv
    bt = meta.decode_block_tables

    def gather(rows):  # [Bd, Hkv, S, D] float64, contiguous
        g = rows.index_select(0, bt.view(-1)).view(nd, -1, hkv, D).transpose(1, 2)
        return g.to(torch.float64, memory_format=torch.contiguous_format)

    kk, vv = gather(k_rows), gather(v_rows)
    mask = meta.decode_mask.reshape(nd, 1, 1, -1)  # [Bd, 1, 1, S]: True = attended
    qd = q.double().view(nd, hkv, G, D)  # query head h uses KV head h // G
    s = (qd @ kk.mT * scale).masked_fill(~mask, -math.inf)
    w = torch.softmax(s, -1)  # [Bd, Hkv, G, S]
    ref = w @ vv  # [Bd, Hkv, G, D]
    wa = w * (qd.abs() @ kk.abs_().mT * scale)  # w_j A_j (0 for masked keys: w_j = 0)
    va = vv.abs_()
    oa = ref.abs()
    sqrt_n = mask.view(nd, 1, 1, -1).sum(-1, keepdim=True).double().sqrt()
    # S_d <= sum_j w_j A_j |v_jd| + |o_d| sum_j w_j A_j,  M_d <= sum_j w_j |v_jd| + |o_d|
    score_term = wa @ va + oa * wa.sum(-1, keepdim=True)
    weighted_v = w @ va + oa
    bound = U32 * (LAMBDA * math.sqrt(D + 1) * score_term
                   + (3 + 1.4 * LAMBDA * sqrt_n + LAMBDA * math.sqrt(2) * sqrt_n) * weighted_v + 2 * oa)
    ref, bound = ref.view(nd, H, D), bound.view(nd, H, D)
    return ref, bound


def _assert_within_bound(out, ref, bound):
    """Every element of ``out`` within the fp32 bound (plus the output rounding)."""
    dtype = out.dtype
    bound = bound + U_LOW[dtype] * (ref.abs() + bound) + ABS_LOW[dtype]
    err = (out.double() - ref).abs()
    worst = (err / bound).max().item()
    assert worst <= 1.0, (f"max abs error {err.max().item():.3g}, {worst:.3g}x the bound "
                          f"(at most {bound.max().item():.3g})")
    return err.max().item()


def _check(isa, dtype, hkv, ratio, d, ctxs, tpp, window=None, tail=0, layer=1, seed=0):
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
                                             tpp, hkv, scale, window, isa=isa)
    assert out.shape == q.shape and out.dtype == dtype
    # reference in float64 on the same (rounded) values
    ref, bound = _reference64(q, k_rows, v_rows, meta, hkv, scale)
    err = _assert_within_bound(out, ref, bound)
    if dtype != torch.float32:  # no worse than SDPA computing in the low precision itself
        low = _reference(q, k_rows, v_rows, meta, hkv, scale)
        assert err <= 2 * (low.double() - ref).abs().max().item() + 1e-3


CTXS = [1, 16, 17, 48, 5, 100, 33, 2, 64]  # includes 1 and exact multiples of 16


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("ratio", [1, 3, 4])
@pytest.mark.parametrize("d", [16, 32, 64, 128])
def test_matches_reference(isa, dtype, ratio, d):
    _check(isa, dtype, hkv=2, ratio=ratio, d=d, ctxs=CTXS, tpp=16, tail=24)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("d", [8, 24, 48, 80, 256])
def test_other_head_dims(isa, dtype, d):
    # not 1/2/4/8 SIMD vectors (runtime loop) or not a multiple of the SIMD width (scalar path)
    _check(isa, dtype, hkv=2, ratio=2, d=d, ctxs=CTXS, tpp=16, tail=8)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("window", [1, 7, 16, 40, 1000])
def test_sliding_window(isa, dtype, window):
    _check(isa, dtype, hkv=4, ratio=3, d=32, ctxs=CTXS + [300, 129], tpp=16, window=window)


@pytest.mark.parametrize("tpp", [1, 5, 21, 100])
def test_page_sizes_and_long_contexts(isa, tpp):
    # tpp=100 with long contexts: blocks split inside a page; ctx = exact page multiples too
    _check(isa, torch.float32, hkv=4, ratio=3, d=64, ctxs=[1, tpp, 2 * tpp, 3 * tpp + 1, 700, 1, 257], tpp=tpp,
           tail=40, layer=2, seed=tpp)


def test_large_scores_are_stable(isa):
    # Softmax of widely spread scores (online max rescaling): scale up q.
    dtype, hkv, d, tpp = torch.float32, 2, 64, 16
    view = _pool(40, 1, tpp, hkv, d, dtype, 0, 3)
    k_rows, v_rows = layer_page_views(view)[0]
    chunks = _case([200, 31], tpp, 40, 3)
    meta = build_metadata(chunks, 2, tpp, None)
    q = torch.randn(2, 4, d, generator=torch.Generator().manual_seed(5)) * 30
    out = cpu_kernels.paged_decode_attention(q, k_rows, v_rows, meta.decode_block_tables, meta.decode_context_lens,
                                             tpp, hkv, d ** -0.5, isa=isa)
    assert torch.isfinite(out).all()
    ref, bound = _reference64(q, k_rows, v_rows, meta, hkv, d ** -0.5)
    _assert_within_bound(out, ref, bound)


def test_few_sequences_split_heads(isa):
    # One sequence with many KV heads: work is split across heads, results identical.
    _check(isa, torch.float32, hkv=8, ratio=2, d=64, ctxs=[500], tpp=16)
    _check(isa, torch.float32, hkv=6, ratio=1, d=64, ctxs=[77, 3], tpp=16)


def test_out_argument_and_errors(isa):
    dtype, hkv, d, tpp = torch.float32, 2, 16, 4
    view = _pool(10, 1, tpp, hkv, d, dtype, 0, 0)
    k_rows, v_rows = layer_page_views(view)[0]
    bt = torch.tensor([[3, 1], [0, 0]])
    ctx = torch.tensor([6, 2])
    q = torch.randn(2, 4, d)
    out = torch.full((4, 4, d), float("nan"))
    r = cpu_kernels.paged_decode_attention(q, k_rows, v_rows, bt, ctx, tpp, hkv, 0.25, out=out[1:3], isa=isa)
    assert r.data_ptr() == out[1:3].data_ptr()
    assert torch.isnan(out[0]).all() and torch.isnan(out[3]).all() and torch.isfinite(out[1:3]).all()
    with pytest.raises(RuntimeError, match="out of range"):
        cpu_kernels.paged_decode_attention(q, k_rows, v_rows, torch.tensor([[3, 10], [0, 0]]), ctx, tpp, hkv, 0.25,
                                           isa=isa)
    with pytest.raises(RuntimeError, match="context length"):
        cpu_kernels.paged_decode_attention(q, k_rows, v_rows, bt, torch.tensor([9, 2]), tpp, hkv, 0.25, isa=isa)
    with pytest.raises(RuntimeError, match="multiple"):
        cpu_kernels.paged_decode_attention(torch.randn(2, 3, d), k_rows, v_rows, bt, ctx, tpp, hkv, 0.25, isa=isa)
    with pytest.raises(RuntimeError, match="dtype"):
        cpu_kernels.paged_decode_attention(q.double(), k_rows, v_rows, bt, ctx, tpp, hkv, 0.25, isa=isa)


@pytest.mark.parametrize("window", [None, 9])
def test_paged_attention_uses_kernel(monkeypatch, isa, window):
    """``paged_attention`` with a mixed decode + prefill batch: same output with the kernel
    (the SEALLM_CPU_ISA build) and with the SDPA fallback (SEALLM_CPU_KERNELS=0)."""
    monkeypatch.setenv("SEALLM_CPU_ISA", isa)
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
    torch.testing.assert_close(outs[0][3:], outs[1][3:], atol=0, rtol=0)  # prefill rows: SDPA both times
    # decode rows: both fp32 computations of the same attention, each within the bound of the
    # exact one (the analysis above holds for any summation order)
    ref, bound = _reference64(q[:3], *layer_page_views(view)[layer], meta, hkv, d ** -0.5)
    for o in outs:
        _assert_within_bound(o[:3].view(3, H, d), ref, bound)


def test_isa_builds_side_by_side(monkeypatch):
    """Each SEALLM_CPU_ISA choice is its own library and op namespace; kernel_isa reports the
    path compiled in, following the environment."""
    flags = cpu_kernels._cpu_flags()
    native = cpu_kernels.kernel_isa("native")
    if "avx512f" in flags:
        assert native == "avx512"
    elif {"avx2", "fma", "f16c"} <= flags:
        assert native == "avx2"
    if {"avx2", "fma", "f16c"} <= flags:
        assert cpu_kernels.kernel_isa("avx2") == "avx2"
    assert cpu_kernels.kernel_isa("generic") == "generic"
    for choice, ns in (("native", "seallm_cpu"), ("avx2", "seallm_cpu_avx2"), ("generic", "seallm_cpu_generic")):
        if cpu_kernels._variant(choice) == choice:
            assert getattr(torch.ops, ns).isa() == cpu_kernels.kernel_isa(choice)
    for env in ("generic", "avx2", "native"):
        monkeypatch.setenv("SEALLM_CPU_ISA", env)
        assert cpu_kernels.kernel_isa() == cpu_kernels.kernel_isa(env)
        assert cpu_kernels.compile_seconds() is not None
    monkeypatch.setenv("SEALLM_CPU_ISA", "avx9")
    with pytest.raises(ValueError, match="SEALLM_CPU_ISA"):
        cpu_kernels.decode_attention_available()


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
