// Paged decode attention for the CPU: one query token per sequence, K/V read in place from
// the pages of the unified KV pool (no gather copies).
//
// Registered as torch.ops.seallm_cpu.paged_decode_attention (JIT-compiled by
// seallm/models/cpu_kernels.py with -O3 -march=native -fopenmp).
//
// Layout: k_rows / v_rows are 2-D strided views [num_pages, tpp * Hkv * D] with strides
// (row_stride, 1): row p is page p's K (or V) of one layer, token-major [tpp, Hkv, D].
// The row stride comes from the tensor (pages are not contiguous with each other).
//
// Algorithm: per work item (one sequence x a range of KV heads), blockwise online softmax
// over the keys in position order (exact: running max / sum rescaling, fp32 accumulation).
// Per block of <= kBlock tokens: scores for every query head of the item (q pre-scaled),
// block max, one rescale of the accumulators, exp, then the V accumulation. K and V of each
// token are read once for all the query heads that share its KV head (GQA).

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

namespace {

constexpr int64_t kBlock = 64;  // keys per softmax block

// ---- element conversion (vectorizable) -------------------------------------------------

struct F32 {
  using storage = float;
  static inline float load(float x) { return x; }
};

struct BF16 {
  using storage = uint16_t;
  static inline float load(uint16_t x) {
    uint32_t u = static_cast<uint32_t>(x) << 16;
    float f;
    std::memcpy(&f, &u, sizeof(f));
    return f;
  }
};

struct F16 {
#if defined(__FLT16_MAX__)
  using storage = _Float16;  // GCC >= 12 / clang: vcvtph2ps with F16C
  static inline float load(_Float16 x) { return static_cast<float>(x); }
#else
  using storage = uint16_t;
  static inline float load(uint16_t x) { return c10::detail::fp16_ieee_to_fp32_value(x); }
#endif
};

template <typename T>
inline void store_out(T* dst, const float* src, int64_t n, float mul);

template <>
inline void store_out<float>(float* dst, const float* src, int64_t n, float mul) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) dst[i] = src[i] * mul;
}

template <>
inline void store_out<c10::BFloat16>(c10::BFloat16* dst, const float* src, int64_t n, float mul) {
  for (int64_t i = 0; i < n; ++i) dst[i] = c10::BFloat16(src[i] * mul);  // round to nearest even
}

template <>
inline void store_out<c10::Half>(c10::Half* dst, const float* src, int64_t n, float mul) {
  for (int64_t i = 0; i < n; ++i) dst[i] = c10::Half(src[i] * mul);
}

template <typename T>
inline float load_scalar(const T& x) {
  return static_cast<float>(x);
}

// ---- exp: Cody-Waite range reduction + degree-6 polynomial, ~1 ulp on [-87, 0] ------------
// Written branch-free so that `#pragma omp simd` loops calling it vectorize (glibc's expf
// does not without -ffast-math).
inline float exp_f32(float x) {
  x = std::max(x, -87.0f);  // softmax arguments are <= 0; exp(-87) ~ 1.6e-38 (normal)
  x = std::min(x, 88.0f);
  // n = round(x / ln2) by the 1.5 * 2^23 trick (vectorizes without -ffast-math)
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  float r = x - n * 0.693359375f;  // ln2 high part (exact in float)
  r = r - n * -2.12194440e-4f;     // ln2 low part
  // exp(r) on [-ln2/2, ln2/2] (Cephes expf coefficients)
  float p = 1.9875691500e-4f;
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

inline float dot(const float* __restrict a, const float* __restrict b, int64_t n) {
  float s = 0.f;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

template <typename S>
inline float dot_conv(const float* __restrict a, const typename S::storage* __restrict b, int64_t n) {
  float s = 0.f;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += a[i] * S::load(b[i]);
  return s;
}

template <typename S>
inline void axpy_conv(float* __restrict y, float a, const typename S::storage* __restrict x, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] += a * S::load(x[i]);
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
template <typename S, typename OutT>
void attend(const Params& P, int64_t b, int64_t kh0, int64_t kh1, const OutT* q, const typename S::storage* k_rows,
            const typename S::storage* v_rows, const int64_t* bt, int64_t ctx, OutT* out, std::vector<float>& buf) {
  using T = typename S::storage;
  const int64_t D = P.D, G = P.G, tpp = P.tpp, Hkv = P.Hkv;
  const int64_t nkh = kh1 - kh0;
  const int64_t nh = nkh * G;  // query heads in this item: [kh0 * G, kh1 * G)
  const int64_t tok_stride = Hkv * D;

  buf.resize(static_cast<size_t>(2 * nh * D + nh * kBlock + 2 * nh));
  float* qf = buf.data();            // [nh, D], pre-scaled
  float* acc = qf + nh * D;          // [nh, D]
  float* sc = acc + nh * D;          // [nh, kBlock]
  float* mx = sc + nh * kBlock;      // [nh] running max
  float* sum = mx + nh;              // [nh] running sum of exp

  for (int64_t h = 0; h < nh; ++h) {
    const OutT* qh = q + b * P.q_s0 + (kh0 * G + h) * P.q_s1;
    for (int64_t d = 0; d < D; ++d) qf[h * D + d] = load_scalar(qh[d]) * P.scale;
    mx[h] = -std::numeric_limits<float>::infinity();
    sum[h] = 0.f;
  }
  std::fill(acc, acc + nh * D, 0.f);

  int64_t start = 0;
  if (P.window > 0 && ctx > P.window) start = ctx - P.window;

  int64_t t = start;
  while (t < ctx) {
    // A block: tokens [t, t + n) inside one page.
    const int64_t page_idx = t / tpp;
    const int64_t off = t - page_idx * tpp;
    const int64_t n = std::min({kBlock, tpp - off, ctx - t});
    const int64_t page = bt[page_idx];
    const T* kb = k_rows + page * P.k_stride + off * tok_stride + kh0 * D;
    const T* vb = v_rows + page * P.v_stride + off * tok_stride + kh0 * D;

    // scores
    for (int64_t j = 0; j < n; ++j) {
      const T* kj = kb + j * tok_stride;
      for (int64_t kh = 0; kh < nkh; ++kh) {
        const T* kr = kj + kh * D;
        for (int64_t g = 0; g < G; ++g) {
          const int64_t h = kh * G + g;
          sc[h * kBlock + j] = dot_conv<S>(qf + h * D, kr, D);
        }
      }
    }
    // online softmax update
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
#pragma omp simd
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
    // V accumulation
    for (int64_t j = 0; j < n; ++j) {
      const T* vj = vb + j * tok_stride;
      for (int64_t kh = 0; kh < nkh; ++kh) {
        const T* vr = vj + kh * D;
        for (int64_t g = 0; g < G; ++g) {
          const int64_t h = kh * G + g;
          axpy_conv<S>(acc + h * D, sc[h * kBlock + j], vr, D);
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

template <typename S, typename OutT>
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

  // Work items: (sequence, group of KV heads). Whole sequences (all heads: each page row is
  // read front to back) when there are enough of them to keep every thread busy; else split
  // the KV heads so that small batches with long contexts still use all threads.
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
      attend<S, OutT>(P, b, kh0, kh0 + heads_per, qp, kp, vp, btp + b * P.Pmax, cl[b], op, buf);
    }
  });
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
  TORCH_CHECK(tokens_per_page > 0, "tokens_per_page must be positive");
  TORCH_CHECK(q.stride(2) == 1 || D == 1, "q's last dim must be contiguous");
  TORCH_CHECK(out.sizes() == q.sizes() && out.scalar_type() == q.scalar_type(), "out must match q");
  TORCH_CHECK(out.stride(2) == 1 || D == 1, "out's last dim must be contiguous");
  const auto dt = q.scalar_type();
  TORCH_CHECK(k_rows.scalar_type() == dt && v_rows.scalar_type() == dt, "q, k_rows, v_rows dtypes differ");
  const int64_t row = tokens_per_page * num_kv_heads * D;
  for (const at::Tensor* t : {&k_rows, &v_rows}) {
    TORCH_CHECK(t->dim() == 2 && t->size(1) == row, "page rows must be [num_pages, ", row, "], got ", t->sizes());
    TORCH_CHECK(t->stride(1) == 1 || row == 1, "page rows must be contiguous within a page");
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
    int64_t first = 0;
    if (sliding_window > 0 && ctx > sliding_window) first = (ctx - sliding_window) / tokens_per_page;
    for (int64_t p = first; p <= (ctx - 1) / tokens_per_page; ++p) {
      const int64_t pg = btp[b * Pmax + p];
      TORCH_CHECK(pg >= 0 && pg < num_pages, "page ", pg, " of sequence ", b, " out of range [0, ", num_pages, ")");
    }
  }

  Params P{H,         num_kv_heads,     D,           H / num_kv_heads, tokens_per_page, Pmax,
           q.stride(0), q.stride(1), out.stride(0), out.stride(1),      k_rows.stride(0), v_rows.stride(0),
           sliding_window, static_cast<float>(scale)};
  switch (dt) {
    case at::kFloat:
      run<F32, float>(P, q, k_rows, v_rows, block_tables, context_lens, out);
      break;
    case at::kBFloat16:
      run<BF16, c10::BFloat16>(P, q, k_rows, v_rows, block_tables, context_lens, out);
      break;
    case at::kHalf:
      run<F16, c10::Half>(P, q, k_rows, v_rows, block_tables, context_lens, out);
      break;
    default:
      TORCH_CHECK(false, "paged_decode_attention: unsupported dtype ", dt);
  }
}

}  // namespace

TORCH_LIBRARY(seallm_cpu, m) {
  m.def(
      "paged_decode_attention(Tensor q, Tensor k_rows, Tensor v_rows, Tensor block_tables, Tensor context_lens, "
      "int tokens_per_page, int num_kv_heads, float scale, int sliding_window, Tensor(a!) out) -> ()");
}

TORCH_LIBRARY_IMPL(seallm_cpu, CPU, m) {
  m.impl("paged_decode_attention", &paged_decode_attention);
}
