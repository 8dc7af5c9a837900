// Paged decode attention for the CPU: one query token per sequence, K/V read in place from
// the pages of the unified KV pool (no gather copies).
//
// Registered as torch.ops.<SEALLM_OP_NS>.paged_decode_attention (namespace seallm_cpu unless
// the build defines SEALLM_OP_NS, so that differently compiled variants can be loaded side by
// side), plus <SEALLM_OP_NS>.isa() -> the SIMD path compiled in ("avx512", "avx2" or
// "generic"). JIT-compiled by seallm/models/cpu_kernels.py with -O3 -march=native -fopenmp
// (SEALLM_CPU_ISA=avx2 adds -mno-avx512f; =generic defines SEALLM_CPU_SIMD_GENERIC).
//
// Layout: k_rows / v_rows are 2-D strided views [num_pages, tpp * Hkv * D] with strides
// (row_stride, 1): row p is page p's K (or V) of one layer, token-major [tpp, Hkv, D]. The
// row stride comes from the tensor (pages are not contiguous with each other).
//
// Algorithm: per work item (one sequence x a range of KV heads), blockwise online softmax
// over the keys in position order (exact: running max / sum rescaling, fp32 accumulation).
// Per block of <= kBlock tokens inside one page: the scores of every query head of the item
// (q pre-scaled; each K row is loaded and converted once for the G query heads sharing it),
// block max and one rescale of the accumulators, exp, then the V accumulation.
//
// SIMD: a small vector abstraction with AVX-512 (16 floats), AVX2+FMA+F16C (8 floats) and
// portable (plain arrays the compiler auto-vectorizes) implementations, chosen at compile
// time by -march=native (or forced to the portable one by defining SEALLM_CPU_SIMD_GENERIC);
// the head dim must be a multiple of the vector width, else a width-1 fallback is used.
// Head dims of 1, 2, 4 or 8 vectors get unrolled instances.

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#if defined(SEALLM_CPU_SIMD_GENERIC)
#define SEALLM_SIMD_GENERIC 1
#elif defined(__AVX512F__)
#define SEALLM_SIMD_AVX512 1
#elif defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define SEALLM_SIMD_AVX2 1
#else
#define SEALLM_SIMD_GENERIC 1
#endif

#if defined(SEALLM_SIMD_AVX512) || defined(SEALLM_SIMD_AVX2)
#include <immintrin.h>
#endif

#ifndef SEALLM_OP_NS
#define SEALLM_OP_NS seallm_cpu
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

namespace {

constexpr int64_t kBlock = 64;    // keys per softmax block
constexpr int64_t kPrefetch = 8;  // tokens of K prefetched ahead

// ---- element types: storage and scalar conversion -------------------------------------

struct F32 {
  using storage = float;
  static inline float to_float(float x) { return x; }
};
struct BF16 {
  using storage = uint16_t;
  static inline float to_float(uint16_t x) {
    const uint32_t u = static_cast<uint32_t>(x) << 16;
    float f;
    std::memcpy(&f, &u, sizeof(f));
    return f;
  }
};
struct F16 {
  using storage = uint16_t;
  static inline float to_float(uint16_t x) {
#if defined(__FLT16_MAX__)
    _Float16 h;  // GCC >= 12 / clang: hardware conversion with F16C
    std::memcpy(&h, &x, sizeof(h));
    return static_cast<float>(h);
#else
    return static_cast<float>(c10::Half(x, c10::Half::from_bits()));
#endif
  }
};

// ---- vector abstractions -------------------------------------------------------------
// reg: W floats. load<S>(p): W elements of type S converted to float.

#if defined(SEALLM_SIMD_AVX512)
struct VecAVX512 {
  static constexpr int W = 16;
  using reg = __m512;
  static inline reg zero() { return _mm512_setzero_ps(); }
  static inline reg set1(float x) { return _mm512_set1_ps(x); }
  static inline reg loadf(const float* p) { return _mm512_loadu_ps(p); }
  static inline void storef(float* p, reg v) { _mm512_storeu_ps(p, v); }
  template <typename S>
  static inline reg load(const typename S::storage* p) {
    if constexpr (std::is_same_v<S, F32>) {
      return _mm512_loadu_ps(p);
    } else if constexpr (std::is_same_v<S, BF16>) {
      const __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
      return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
    } else {
      return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    }
  }
  static inline reg fmadd(reg a, reg b, reg c) { return _mm512_fmadd_ps(a, b, c); }
  static inline reg mul(reg a, reg b) { return _mm512_mul_ps(a, b); }
  static inline float reduce(reg v) { return _mm512_reduce_add_ps(v); }
};
#endif

#if defined(SEALLM_SIMD_AVX2)
struct VecAVX2 {
  static constexpr int W = 8;
  using reg = __m256;
  static inline reg zero() { return _mm256_setzero_ps(); }
  static inline reg set1(float x) { return _mm256_set1_ps(x); }
  static inline reg loadf(const float* p) { return _mm256_loadu_ps(p); }
  static inline void storef(float* p, reg v) { _mm256_storeu_ps(p, v); }
  template <typename S>
  static inline reg load(const typename S::storage* p) {
    if constexpr (std::is_same_v<S, F32>) {
      return _mm256_loadu_ps(p);
    } else if constexpr (std::is_same_v<S, BF16>) {
      const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
      return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
    } else {
      return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    }
  }
  static inline reg fmadd(reg a, reg b, reg c) { return _mm256_fmadd_ps(a, b, c); }
  static inline reg mul(reg a, reg b) { return _mm256_mul_ps(a, b); }
  static inline float reduce(reg v) {
    __m128 lo = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    __m128 sh = _mm_movehdup_ps(lo);
    __m128 s = _mm_add_ps(lo, sh);
    sh = _mm_movehl_ps(sh, s);
    return _mm_cvtss_f32(_mm_add_ss(s, sh));
  }
};
#endif

// Portable: W plain floats; the element-wise loops auto-vectorize on any target.
template <int W_>
struct VecGeneric {
  static constexpr int W = W_;
  struct reg {
    float v[W_];
  };
  static inline reg zero() {
    reg r;
    for (int i = 0; i < W; ++i) r.v[i] = 0.f;
    return r;
  }
  static inline reg set1(float x) {
    reg r;
    for (int i = 0; i < W; ++i) r.v[i] = x;
    return r;
  }
  static inline reg loadf(const float* p) {
    reg r;
    for (int i = 0; i < W; ++i) r.v[i] = p[i];
    return r;
  }
  static inline void storef(float* p, const reg& a) {
    for (int i = 0; i < W; ++i) p[i] = a.v[i];
  }
  template <typename S>
  static inline reg load(const typename S::storage* p) {
    reg r;
    for (int i = 0; i < W; ++i) r.v[i] = S::to_float(p[i]);
    return r;
  }
  static inline reg fmadd(const reg& a, const reg& b, const reg& c) {
    reg r;
    for (int i = 0; i < W; ++i) r.v[i] = a.v[i] * b.v[i] + c.v[i];
    return r;
  }
  static inline reg mul(const reg& a, const reg& b) {
    reg r;
    for (int i = 0; i < W; ++i) r.v[i] = a.v[i] * b.v[i];
    return r;
  }
  static inline float reduce(const reg& a) {
    float s = 0.f;
    for (int i = 0; i < W; ++i) s += a.v[i];
    return s;
  }
};

#if defined(SEALLM_SIMD_AVX512)
using VecWide = VecAVX512;
constexpr const char* kIsa = "avx512";
#elif defined(SEALLM_SIMD_AVX2)
using VecWide = VecAVX2;
constexpr const char* kIsa = "avx2";
#else
using VecWide = VecGeneric<8>;
constexpr const char* kIsa = "generic";
#endif
using VecOne = VecGeneric<1>;

// ---- exp: Cody-Waite range reduction + degree-6 polynomial (Cephes expf), ~1 ulp -----------
// Branch-free so that the `omp simd` loop calling it vectorizes (glibc's expf does not
// without -ffast-math).
inline float exp_f32(float x) {
  x = std::max(x, -87.0f);  // softmax arguments are <= 0; exp(-87) ~ 1.6e-38 (normal)
  x = std::min(x, 88.0f);
  // n = round(x / ln2) by the 1.5 * 2^23 trick (no rounding intrinsic needed)
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  float r = x - n * 0.693359375f;  // ln2, high part (exact in float)
  r = r - n * -2.12194440e-4f;     // ln2, low part
  float p = 1.9875691500e-4f;      // exp(r) on [-ln2/2, ln2/2]
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  int32_t bits;
  std::memcpy(&bits, &p, sizeof(bits));
  bits += static_cast<int32_t>(n) << 23;
  float out;
  std::memcpy(&out, &bits, sizeof(out));
  return out;
}

inline void prefetch_row(const void* p, int64_t bytes) {
  const char* c = static_cast<const char*>(p);
  for (int64_t o = 0; o < bytes; o += 64) __builtin_prefetch(c + o, 0, 3);
}

template <typename OutT>
inline void store_out(OutT* dst, const float* src, int64_t n, float mul) {
  for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<OutT>(src[i] * mul);  // bf16/fp16: round to nearest even
}

// ---- the kernel -------------------------------------------------------------------------

struct Params {
  int64_t H, Hkv, D, G, tpp, Pmax;
  int64_t q_s0, q_s1;          // q strides (elements) of dims 0 and 1; dim 2 is contiguous
  int64_t o_s0, o_s1;          // same for out
  int64_t k_stride, v_stride;  // page (row) strides of k_rows / v_rows
  int64_t window;              // > 0: attend to the last `window` keys only
  float scale;
};

// One sequence `b`, KV heads [kh0, kh1): every query head of those KV heads.
// V: vector type; S: element type; NC_T: vectors per head (0: runtime D / W).
template <typename V, typename S, int NC_T, typename OutT>
void attend(const Params& P, int64_t b, int64_t kh0, int64_t kh1, const OutT* q, const typename S::storage* k_rows,
            const typename S::storage* v_rows, const int64_t* bt, int64_t ctx, OutT* out, std::vector<float>& buf) {
  using T = typename S::storage;
  using reg = typename V::reg;
  constexpr int W = V::W;
  const int64_t D = P.D, G = P.G, tpp = P.tpp, Hkv = P.Hkv;
  const int64_t NC = NC_T > 0 ? NC_T : D / W;
  const int64_t nkh = kh1 - kh0;
  const int64_t nh = nkh * G;  // query heads of this item: [kh0 * G, kh1 * G)
  const int64_t tok_stride = Hkv * D;

  buf.resize(static_cast<size_t>(2 * nh * D + nh * kBlock + 2 * nh));
  float* qf = buf.data();        // [nh, D], pre-scaled
  float* acc = qf + nh * D;      // [nh, D]
  float* sc = acc + nh * D;      // [nh, kBlock]: scores, then probabilities
  float* mx = sc + nh * kBlock;  // [nh] running max
  float* sum = mx + nh;          // [nh] running sum of exp

  for (int64_t h = 0; h < nh; ++h) {
    const OutT* qh = q + b * P.q_s0 + (kh0 * G + h) * P.q_s1;
    for (int64_t d = 0; d < D; ++d) qf[h * D + d] = static_cast<float>(qh[d]) * P.scale;
    mx[h] = -std::numeric_limits<float>::infinity();
    sum[h] = 0.f;
  }
  std::fill(acc, acc + nh * D, 0.f);

  const int64_t row_bytes = nkh * D * static_cast<int64_t>(sizeof(T));
  const int64_t start = (P.window > 0 && ctx > P.window) ? ctx - P.window : 0;
  for (int64_t j = 0; j < std::min(kPrefetch, ctx - start); ++j) {  // the first keys
    const int64_t ta = start + j, pa = ta / tpp;
    prefetch_row(k_rows + bt[pa] * P.k_stride + (ta - pa * tpp) * tok_stride + kh0 * D, row_bytes);
  }
  for (int64_t t = start; t < ctx;) {
    // A block: tokens [t, t + n), all in one page.
    const int64_t page_idx = t / tpp;
    const int64_t off = t - page_idx * tpp;
    const int64_t n = std::min({kBlock, tpp - off, ctx - t});
    const int64_t page = bt[page_idx];
    const T* kb = k_rows + page * P.k_stride + off * tok_stride + kh0 * D;
    const T* vb = v_rows + page * P.v_stride + off * tok_stride + kh0 * D;

    // Scores, token by token (each token's K of the item's heads is contiguous). Software
    // prefetch: this token's V (used below) and the K of the token kPrefetch ahead, which
    // may be on another page (pages are scattered: hardware prefetchers restart on each).
    for (int64_t j = 0; j < n; ++j) {
      prefetch_row(vb + j * tok_stride, row_bytes);
      const int64_t ta = t + j + kPrefetch;
      if (ta < ctx) {
        const int64_t pa = ta / tpp;
        prefetch_row(k_rows + bt[pa] * P.k_stride + (ta - pa * tpp) * tok_stride + kh0 * D, row_bytes);
      }
      for (int64_t kh = 0; kh < nkh; ++kh) {
        const T* kr = kb + j * tok_stride + kh * D;
        const float* qk = qf + kh * G * D;
        float* sk = sc + kh * G * kBlock + j;
        if constexpr (NC_T > 0) {
          reg kv[NC_T];
          for (int c = 0; c < NC_T; ++c) kv[c] = V::template load<S>(kr + c * W);
          for (int64_t g = 0; g < G; ++g) {
            const float* qg = qk + g * D;
            reg a = V::mul(V::loadf(qg), kv[0]);
            for (int c = 1; c < NC_T; ++c) a = V::fmadd(V::loadf(qg + c * W), kv[c], a);
            sk[g * kBlock] = V::reduce(a);
          }
        } else {
          for (int64_t g = 0; g < G; ++g) {
            const float* qg = qk + g * D;
            reg a = V::zero();
            for (int64_t c = 0; c < NC; ++c) a = V::fmadd(V::loadf(qg + c * W), V::template load<S>(kr + c * W), a);
            sk[g * kBlock] = V::reduce(a);
          }
        }
      }
    }
    // Online softmax update.
    for (int64_t h = 0; h < nh; ++h) {
      float* s = sc + h * kBlock;
      float bm = s[0];
      for (int64_t j = 1; j < n; ++j) bm = std::max(bm, s[j]);
      const float m_new = std::max(mx[h], bm);
      if (m_new > mx[h]) {
        if (sum[h] != 0.f) {
          const float alpha = std::exp(mx[h] - m_new);
          sum[h] *= alpha;
          float* a = acc + h * D;
          for (int64_t d = 0; d < D; ++d) a[d] *= alpha;
        }
        mx[h] = m_new;
      }
      float bsum = 0.f;
#pragma omp simd reduction(+ : bsum)
      for (int64_t j = 0; j < n; ++j) {
        const float p = exp_f32(s[j] - m_new);
        s[j] = p;
        bsum += p;
      }
      sum[h] += bsum;
    }
    // V accumulation: per query head, accumulators in registers over the block's tokens.
    for (int64_t kh = 0; kh < nkh; ++kh) {
      const T* vk = vb + kh * D;
      for (int64_t g = 0; g < G; ++g) {
        const int64_t h = kh * G + g;
        const float* p = sc + h * kBlock;
        float* a = acc + h * D;
        if constexpr (NC_T > 0) {
          reg ar[NC_T];
          for (int c = 0; c < NC_T; ++c) ar[c] = V::loadf(a + c * W);
          for (int64_t j = 0; j < n; ++j) {
            const reg pj = V::set1(p[j]);
            const T* vr = vk + j * tok_stride;
            for (int c = 0; c < NC_T; ++c) ar[c] = V::fmadd(pj, V::template load<S>(vr + c * W), ar[c]);
          }
          for (int c = 0; c < NC_T; ++c) V::storef(a + c * W, ar[c]);
        } else {
          for (int64_t j = 0; j < n; ++j) {
            const reg pj = V::set1(p[j]);
            const T* vr = vk + j * tok_stride;
            for (int64_t c = 0; c < NC; ++c)
              V::storef(a + c * W, V::fmadd(pj, V::template load<S>(vr + c * W), V::loadf(a + c * W)));
          }
        }
      }
    }
    t += n;
  }

  for (int64_t h = 0; h < nh; ++h) {
    OutT* oh = out + b * P.o_s0 + (kh0 * G + h) * P.o_s1;
    store_out<OutT>(oh, acc + h * D, D, 1.f / sum[h]);
  }
}

template <typename V, typename S, int NC_T, typename OutT>
void run(const Params& P, const at::Tensor& q, const at::Tensor& k_rows, const at::Tensor& v_rows,
         const at::Tensor& bt, const at::Tensor& ctx_lens, at::Tensor& out) {
  using T = typename S::storage;
  const int64_t Bd = q.size(0);
  const OutT* qp = reinterpret_cast<const OutT*>(q.const_data_ptr());
  const T* kp = reinterpret_cast<const T*>(k_rows.const_data_ptr());
  const T* vp = reinterpret_cast<const T*>(v_rows.const_data_ptr());
  const int64_t* btp = bt.const_data_ptr<int64_t>();
  const int64_t* cl = ctx_lens.const_data_ptr<int64_t>();
  OutT* op = reinterpret_cast<OutT*>(out.mutable_data_ptr());

  // Work items: (sequence, group of KV heads). Whole sequences (a token's K/V of all heads
  // is contiguous, read front to back) when there are enough of them for every thread; else
  // split the KV heads so that small batches with long contexts still use all threads.
  const int64_t threads = at::get_num_threads();
  int64_t splits = 1;
  while (splits < P.Hkv && Bd * splits < 4 * threads) ++splits;
  while (P.Hkv % splits) ++splits;  // equal head groups
  const int64_t heads_per = P.Hkv / splits;
  const int64_t items = Bd * splits;

  at::parallel_for(0, items, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> buf;
    for (int64_t it = begin; it < end; ++it) {
      const int64_t b = it / splits;
      const int64_t kh0 = (it % splits) * heads_per;
      attend<V, S, NC_T, OutT>(P, b, kh0, kh0 + heads_per, qp, kp, vp, btp + b * P.Pmax, cl[b], op, buf);
    }
  });
}

template <typename S, typename OutT>
void dispatch_dim(const Params& P, const at::Tensor& q, const at::Tensor& k_rows, const at::Tensor& v_rows,
                  const at::Tensor& bt, const at::Tensor& cl, at::Tensor& out) {
  constexpr int W = VecWide::W;
  if (P.D % W == 0) {
    switch (P.D / W) {
      case 1: return run<VecWide, S, 1, OutT>(P, q, k_rows, v_rows, bt, cl, out);
      case 2: return run<VecWide, S, 2, OutT>(P, q, k_rows, v_rows, bt, cl, out);
      case 4: return run<VecWide, S, 4, OutT>(P, q, k_rows, v_rows, bt, cl, out);
      case 8: return run<VecWide, S, 8, OutT>(P, q, k_rows, v_rows, bt, cl, out);
      default: return run<VecWide, S, 0, OutT>(P, q, k_rows, v_rows, bt, cl, out);
    }
  }
  run<VecOne, S, 0, OutT>(P, q, k_rows, v_rows, bt, cl, out);
}

void paged_decode_attention(const at::Tensor& q, const at::Tensor& k_rows, const at::Tensor& v_rows,
                            const at::Tensor& block_tables, const at::Tensor& context_lens, int64_t tokens_per_page,
                            int64_t num_kv_heads, double scale, int64_t sliding_window, at::Tensor& out) {
  TORCH_CHECK(q.device().is_cpu() && k_rows.device().is_cpu() && v_rows.device().is_cpu() &&
                  block_tables.device().is_cpu() && context_lens.device().is_cpu() && out.device().is_cpu(),
              "paged_decode_attention: CPU tensors expected");
  TORCH_CHECK(q.dim() == 3, "q must be [Bd, H, D]");
  const int64_t Bd = q.size(0), H = q.size(1), D = q.size(2);
  TORCH_CHECK(num_kv_heads > 0 && H % num_kv_heads == 0, "H (", H, ") must be a multiple of num_kv_heads (",
              num_kv_heads, ")");
  TORCH_CHECK(tokens_per_page > 0 && D > 0, "tokens_per_page and the head dim must be positive");
  TORCH_CHECK(q.stride(2) == 1, "q's last dim must be contiguous");
  TORCH_CHECK(out.sizes() == q.sizes() && out.scalar_type() == q.scalar_type(), "out must match q");
  TORCH_CHECK(out.stride(2) == 1, "out's last dim must be contiguous");
  const auto dt = q.scalar_type();
  TORCH_CHECK(k_rows.scalar_type() == dt && v_rows.scalar_type() == dt, "q, k_rows, v_rows dtypes differ");
  const int64_t row = tokens_per_page * num_kv_heads * D;
  for (const at::Tensor* t : {&k_rows, &v_rows}) {
    TORCH_CHECK(t->dim() == 2 && t->size(1) == row, "page rows must be [num_pages, ", row, "], got ", t->sizes());
    TORCH_CHECK(t->stride(1) == 1, "page rows must be contiguous within a page");
  }
  TORCH_CHECK(k_rows.size(0) == v_rows.size(0), "k_rows and v_rows page counts differ");
  TORCH_CHECK(block_tables.scalar_type() == at::kLong && block_tables.dim() == 2 && block_tables.size(0) == Bd &&
                  block_tables.is_contiguous(),
              "block_tables must be contiguous int64 [Bd, Pmax]");
  TORCH_CHECK(context_lens.scalar_type() == at::kLong && context_lens.dim() == 1 && context_lens.size(0) == Bd &&
                  context_lens.is_contiguous(),
              "context_lens must be contiguous int64 [Bd]");
  if (Bd == 0) return;

  const int64_t Pmax = block_tables.size(1);
  const int64_t num_pages = k_rows.size(0);
  const int64_t* btp = block_tables.const_data_ptr<int64_t>();
  const int64_t* cl = context_lens.const_data_ptr<int64_t>();
  for (int64_t b = 0; b < Bd; ++b) {  // validate every page the kernel will read
    const int64_t ctx = cl[b];
    TORCH_CHECK(ctx >= 1 && ctx <= Pmax * tokens_per_page, "context length ", ctx, " of sequence ", b,
                " out of range [1, ", Pmax * tokens_per_page, "]");
    const int64_t first = (sliding_window > 0 && ctx > sliding_window) ? (ctx - sliding_window) / tokens_per_page : 0;
    for (int64_t p = first; p <= (ctx - 1) / tokens_per_page; ++p) {
      const int64_t pg = btp[b * Pmax + p];
      TORCH_CHECK(pg >= 0 && pg < num_pages, "page ", pg, " of sequence ", b, " out of range [0, ", num_pages, ")");
    }
  }

  const Params P{H,           num_kv_heads,  D,
                 H / num_kv_heads, tokens_per_page, Pmax,
                 q.stride(0), q.stride(1),   out.stride(0),
                 out.stride(1), k_rows.stride(0), v_rows.stride(0),
                 sliding_window, static_cast<float>(scale)};
  switch (dt) {
    case at::kFloat: return dispatch_dim<F32, float>(P, q, k_rows, v_rows, block_tables, context_lens, out);
    case at::kBFloat16:
      return dispatch_dim<BF16, c10::BFloat16>(P, q, k_rows, v_rows, block_tables, context_lens, out);
    case at::kHalf: return dispatch_dim<F16, c10::Half>(P, q, k_rows, v_rows, block_tables, context_lens, out);
    default: TORCH_CHECK(false, "paged_decode_attention: unsupported dtype ", dt);
  }
}

std::string isa() { return kIsa; }

}  // namespace

// Indirection so that SEALLM_OP_NS is expanded before TORCH_LIBRARY pastes/stringizes it.
#define SEALLM_TORCH_LIBRARY(ns, m) TORCH_LIBRARY(ns, m)
#define SEALLM_TORCH_LIBRARY_IMPL(ns, k, m) TORCH_LIBRARY_IMPL(ns, k, m)

SEALLM_TORCH_LIBRARY(SEALLM_OP_NS, m) {
  m.def(
      "paged_decode_attention(Tensor q, Tensor k_rows, Tensor v_rows, Tensor block_tables, Tensor context_lens, "
      "int tokens_per_page, int num_kv_heads, float scale, int sliding_window, Tensor(a!) out) -> ()");
  m.def("isa() -> str", &isa);  // no tensor arguments: a catch-all kernel, no dispatch key needed
}

SEALLM_TORCH_LIBRARY_IMPL(SEALLM_OP_NS, CPU, m) { m.impl("paged_decode_attention", &paged_decode_attention); }
