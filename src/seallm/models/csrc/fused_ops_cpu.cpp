// Fused elementwise ops of a Llama-family layer for the CPU: one pass over the data where
// eager PyTorch takes five to ten small ops (each with its own allocation, pass over memory
// and dispatch overhead, which dominates at decode batch sizes).
//
// Registered next to paged_decode_attention in torch.ops.<SEALLM_OP_NS> (same extension,
// TORCH_LIBRARY_FRAGMENT):
//
//   add_rms_norm(residual, delta?, weight, eps, out)
//       if delta is given: residual += delta (in place, rounded to the dtype, as
//       `residual + delta` rounds), then out = weight * dtype(x * rsqrt(mean(x^2) + eps))
//       with x = float(residual): transformers' LlamaRMSNorm, including its roundings.
//       residual, delta, out: [T, D] with unit stride in D; weight [D].
//   rope_(x, positions, cos, sin)
//       rotate-half RoPE in place: x[t, h, :] = x * cos[p] + rotate_half(x) * sin[p] with
//       p = positions[t], rounded per product and sum in the dtype as the eager form does.
//       x: [T, nh, D] with unit stride in D (any row and head strides: the q and k columns
//       of a fused qkv output can be rotated where they lie); cos, sin: [P, D] tables.
//
// All three dtypes (float32, bfloat16, float16); arithmetic in fp32. Rows are split over
// threads with at::parallel_for when there are enough of them.

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#ifndef SEALLM_OP_NS
#define SEALLM_OP_NS seallm_cpu
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <optional>
#include <type_traits>

namespace {

// fp32 <-> storage conversions (round to nearest even), written so that loops vectorize.
inline float load(const float* p, int64_t i) { return p[i]; }
inline float load(const c10::BFloat16* p, int64_t i) {
  const uint32_t u = static_cast<uint32_t>(reinterpret_cast<const uint16_t*>(p)[i]) << 16;
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}
inline float load(const c10::Half* p, int64_t i) { return static_cast<float>(p[i]); }

inline void store(float* p, int64_t i, float v) { p[i] = v; }
inline void store(c10::BFloat16* p, int64_t i, float v) { p[i] = c10::BFloat16(v); }
inline void store(c10::Half* p, int64_t i, float v) { p[i] = c10::Half(v); }

// The value as the dtype would hold it (identity for fp32).
template <typename T>
inline float round_to(float v) {
  if constexpr (std::is_same_v<T, float>) {
    return v;
  } else {
    return static_cast<float>(T(v));
  }
}

int64_t grain(int64_t row_elems) {
  // rows per task: about 64k elements, so that small batches stay on one thread
  const int64_t g = (int64_t{1} << 16) / std::max<int64_t>(row_elems, 1);
  return std::max<int64_t>(g, 1);
}

template <typename T>
void add_rms_norm_impl(const at::Tensor& residual, const std::optional<at::Tensor>& delta, const at::Tensor& weight,
                       double eps, const at::Tensor& out) {
  const int64_t rows = residual.size(0), d = residual.size(1);
  T* res = residual.data_ptr<T>();
  const T* del = delta.has_value() ? delta->data_ptr<T>() : nullptr;
  const T* w = weight.data_ptr<T>();
  T* o = out.data_ptr<T>();
  const int64_t rs = residual.stride(0), ds = delta.has_value() ? delta->stride(0) : 0, os = out.stride(0);
  const float feps = static_cast<float>(eps);
  at::parallel_for(0, rows, grain(d), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      T* x = res + r * rs;
      float ss = 0.f;
      if (del != nullptr) {
        const T* y = del + r * ds;
        for (int64_t i = 0; i < d; ++i) {
          const float v = round_to<T>(load(x, i) + load(y, i));
          store(x, i, v);
          ss += v * v;
        }
      } else {
        for (int64_t i = 0; i < d; ++i) {
          const float v = load(x, i);
          ss += v * v;
        }
      }
      const float inv = 1.f / std::sqrt(ss / static_cast<float>(d) + feps);
      T* orow = o + r * os;
      for (int64_t i = 0; i < d; ++i) {
        store(orow, i, load(w, i) * round_to<T>(load(x, i) * inv));
      }
    }
  });
}

void add_rms_norm(const at::Tensor& residual, const std::optional<at::Tensor>& delta, const at::Tensor& weight,
                  double eps, const at::Tensor& out) {
  TORCH_CHECK(residual.dim() == 2 && residual.stride(1) == 1, "add_rms_norm: residual must be [T, D] with unit stride");
  TORCH_CHECK(out.sizes() == residual.sizes() && out.stride(1) == 1 && out.scalar_type() == residual.scalar_type(),
              "add_rms_norm: out must match residual");
  TORCH_CHECK(weight.dim() == 1 && weight.size(0) == residual.size(1) && weight.is_contiguous() &&
                  weight.scalar_type() == residual.scalar_type(),
              "add_rms_norm: weight must be [D] of residual's dtype");
  if (delta.has_value()) {
    TORCH_CHECK(delta->sizes() == residual.sizes() && delta->stride(1) == 1 &&
                    delta->scalar_type() == residual.scalar_type(),
                "add_rms_norm: delta must match residual");
  }
  switch (residual.scalar_type()) {
    case at::kFloat: return add_rms_norm_impl<float>(residual, delta, weight, eps, out);
    case at::kBFloat16: return add_rms_norm_impl<c10::BFloat16>(residual, delta, weight, eps, out);
    case at::kHalf: return add_rms_norm_impl<c10::Half>(residual, delta, weight, eps, out);
    default: TORCH_CHECK(false, "add_rms_norm: float32, bfloat16 or float16 only");
  }
}

template <typename T>
void rope_impl(const at::Tensor& x, const at::Tensor& positions, const at::Tensor& cos, const at::Tensor& sin) {
  const int64_t rows = x.size(0), nh = x.size(1), d = x.size(2), half = d / 2;
  const int64_t s0 = x.stride(0), s1 = x.stride(1), tab = cos.size(0);
  T* base = x.data_ptr<T>();
  const int64_t* pos = positions.data_ptr<int64_t>();
  const T* c = cos.data_ptr<T>();
  const T* s = sin.data_ptr<T>();
  for (int64_t r = 0; r < rows; ++r) {
    TORCH_CHECK(pos[r] >= 0 && pos[r] < tab, "rope_: position ", pos[r], " outside the tables of ", tab, " rows");
  }
  at::parallel_for(0, rows, grain(nh * d), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const T* cr = c + pos[r] * d;
      const T* sr = s + pos[r] * d;
      for (int64_t h = 0; h < nh; ++h) {
        T* v = base + r * s0 + h * s1;
        for (int64_t i = 0; i < half; ++i) {
          const float a = load(v, i), b = load(v, i + half);
          // out[i] = a*cos[i] + (-b)*sin[i]; out[i+half] = b*cos[i+half] + a*sin[i+half]
          const float lo = round_to<T>(round_to<T>(a * load(cr, i)) + round_to<T>(-b * load(sr, i)));
          const float hi = round_to<T>(round_to<T>(b * load(cr, i + half)) + round_to<T>(a * load(sr, i + half)));
          store(v, i, lo);
          store(v, i + half, hi);
        }
      }
    }
  });
}

void rope_(const at::Tensor& x, const at::Tensor& positions, const at::Tensor& cos, const at::Tensor& sin) {
  TORCH_CHECK(x.dim() == 3 && x.stride(2) == 1 && x.size(2) % 2 == 0, "rope_: x must be [T, nh, D] with unit stride in D, D even");
  TORCH_CHECK(positions.dim() == 1 && positions.size(0) == x.size(0) && positions.scalar_type() == at::kLong &&
                  positions.is_contiguous(),
              "rope_: positions must be [T] int64");
  TORCH_CHECK(cos.dim() == 2 && cos.size(1) == x.size(2) && cos.is_contiguous() && sin.sizes() == cos.sizes() &&
                  sin.is_contiguous() && cos.scalar_type() == x.scalar_type() && sin.scalar_type() == x.scalar_type(),
              "rope_: cos and sin must be contiguous [P, D] tables of x's dtype");
  switch (x.scalar_type()) {
    case at::kFloat: return rope_impl<float>(x, positions, cos, sin);
    case at::kBFloat16: return rope_impl<c10::BFloat16>(x, positions, cos, sin);
    case at::kHalf: return rope_impl<c10::Half>(x, positions, cos, sin);
    default: TORCH_CHECK(false, "rope_: float32, bfloat16 or float16 only");
  }
}

}  // namespace

#define SEALLM_TORCH_LIBRARY_FRAGMENT(ns, m) TORCH_LIBRARY_FRAGMENT(ns, m)
#define SEALLM_TORCH_LIBRARY_IMPL_F(ns, k, m) TORCH_LIBRARY_IMPL(ns, k, m)

SEALLM_TORCH_LIBRARY_FRAGMENT(SEALLM_OP_NS, m) {
  m.def("add_rms_norm(Tensor(a!) residual, Tensor? delta, Tensor weight, float eps, Tensor(b!) out) -> ()");
  m.def("rope_(Tensor(a!) x, Tensor positions, Tensor cos, Tensor sin) -> ()");
}

SEALLM_TORCH_LIBRARY_IMPL_F(SEALLM_OP_NS, CPU, m) {
  m.impl("add_rms_norm", &add_rms_norm);
  m.impl("rope_", &rope_);
}
