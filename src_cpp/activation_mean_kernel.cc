#include "activation_mean_kernel.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

// GCC 12 warns about the deliberately undefined pass-through operands inside
// its own AVX-512 intrinsics (_mm512_undefined_*) when they are inlined.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace bnq {
namespace {

// The activation of one value in levels (branch-free selects, so that the
// loops below vectorize).
struct LevelAct {
  float slope, lo, hi;
  inline float operator()(float v) const {
    // The product unconditionally, and -fno-trapping-math (setup.py): else
    // the compiler keeps the branches and the loops do not vectorize.
    const float scaled = v * slope;
    v = v < 0.f ? scaled : v;
    v = v < lo ? lo : v;
    return v > hi ? hi : v;
  }
};

// One term of the sum: the BatchNorm+activation value in output levels, unrounded.
template <typename T>
inline float Term(T x, float scale, float shift, const LevelAct& act) {
  const float scaled = static_cast<float>(x) * scale;
  return act(scaled + shift);
}

// nearbyint: to nearest, ties to even (the default rounding mode), as MXNet's
// int8 pooling rounds; exact halves of integer sums stay exact.
template <typename D>
inline D MeanLevel(double sum, int64_t count) {
  const double lo = std::is_signed<D>::value ? -128.0 : 0.0;
  const double hi = std::is_signed<D>::value ? 127.0 : 255.0;
  const double q = std::nearbyint(sum / static_cast<double>(count));
  return static_cast<D>(std::min(hi, std::max(lo, q)));
}

// Rows of `count` values, kRows at a time: their terms are transposed into a
// tile (count x kRows), so that the sums run over contiguous values, each row
// still summed in the order of i.
constexpr int64_t kRows = 16;

template <typename T, typename D>
void Planar(const MeanShape& s, const T* src, const FoldedScaleShift& f, const LevelAct& act,
            D* dst) {
  const int64_t rows = s.batch * s.channels;
  const int64_t blocks = (rows + kRows - 1) / kRows;
#pragma omp parallel
  {
    std::vector<float> tile(static_cast<size_t>(s.count * kRows));
#pragma omp for schedule(static)
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t first = b * kRows, n = std::min(kRows, rows - first);
      for (int64_t k = 0; k < n; ++k) {
        const int64_t c = (first + k) % s.channels;
        const float scale = f.scale[c], shift = f.shift[c];
        const T* x = src + (first + k) * s.count;
#pragma omp simd
        for (int64_t i = 0; i < s.count; ++i) tile[i * kRows + k] = Term(x[i], scale, shift, act);
      }
      double sums[kRows] = {};
      for (int64_t i = 0; i < s.count; ++i) {
        const float* terms = &tile[i * kRows];
#pragma omp simd
        for (int64_t k = 0; k < kRows; ++k) sums[k] += terms[k];  // rows past n: unused
      }
      for (int64_t k = 0; k < n; ++k) dst[first + k] = MeanLevel<D>(sums[k], s.count);
    }
  }
}

template <typename T, typename D>
void ChannelsLast(const MeanShape& s, const T* src, const FoldedScaleShift& f, const LevelAct& act,
                  D* dst) {
  const float* scale = f.scale.data();
  const float* shift = f.shift.data();
#pragma omp parallel
  {
    std::vector<double> sums(static_cast<size_t>(s.channels));
    std::vector<float> terms(static_cast<size_t>(s.channels));
#pragma omp for schedule(static)
    for (int64_t n = 0; n < s.batch; ++n) {
      std::fill(sums.begin(), sums.end(), 0.0);
      const T* image = src + n * s.count * s.channels;
      for (int64_t i = 0; i < s.count; ++i) {
        const T* x = image + i * s.channels;
        // Two simple loops (terms, then sums) that the compiler vectorizes.
#pragma omp simd
        for (int64_t c = 0; c < s.channels; ++c) terms[c] = Term(x[c], scale[c], shift[c], act);
#pragma omp simd
        for (int64_t c = 0; c < s.channels; ++c) sums[c] += terms[c];
      }
      for (int64_t c = 0; c < s.channels; ++c) {
        dst[n * s.channels + c] = MeanLevel<D>(sums[c], s.count);
      }
    }
  }
}

#define BNQ_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl")))

// 16 channels of one position as floats (the lanes outside `mask` zero).
template <typename T>
BNQ_AVX512 inline __m512 Load16(const T* x, __mmask16 mask) {
  if constexpr (std::is_same<T, float>::value) {
    return _mm512_maskz_loadu_ps(mask, x);
  } else {
    const __m128i bytes = _mm_maskz_loadu_epi8(mask, x);
    return _mm512_cvtepi32_ps(std::is_signed<T>::value ? _mm512_cvtepi8_epi32(bytes)
                                                       : _mm512_cvtepu8_epi32(bytes));
  }
}

// Term() and LevelAct on 16 lanes: the same float operations in the same order.
BNQ_AVX512 inline __m512 Terms16(__m512 x, __m512 scale, __m512 shift, const LevelAct& act) {
  __m512 v = _mm512_add_ps(_mm512_mul_ps(x, scale), shift);
  v = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_LT_OQ), v,
                           _mm512_mul_ps(v, _mm512_set1_ps(act.slope)));
  const __m512 lo = _mm512_set1_ps(act.lo), hi = _mm512_set1_ps(act.hi);
  v = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(v, lo, _CMP_LT_OQ), v, lo);
  return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(v, hi, _CMP_GT_OQ), v, hi);
}

// The means of 16 channels of one image from c (fewer at the end): the sums
// stay in two registers of 8 doubles while i runs over the positions in
// order.  (64 channels at a time, a cache line per position, were no faster.)
template <typename T, typename D>
BNQ_AVX512 void Block512(const MeanShape& s, const T* image, const FoldedScaleShift& f,
                         const LevelAct& act, int64_t c, D* dst) {
  const int64_t left = std::min<int64_t>(16, s.channels - c);
  const __mmask16 mask = static_cast<__mmask16>((1u << left) - 1);
  const __m512 scale = _mm512_maskz_loadu_ps(mask, f.scale.data() + c);
  const __m512 shift = _mm512_maskz_loadu_ps(mask, f.shift.data() + c);
  __m512d low = _mm512_setzero_pd(), high = _mm512_setzero_pd();
  const T* x = image + c;
  for (int64_t i = 0; i < s.count; ++i, x += s.channels) {
    const __m512 terms = Terms16(Load16(x, mask), scale, shift, act);
    const __m256 upper = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(terms), 1));
    low = _mm512_add_pd(low, _mm512_cvtps_pd(_mm512_castps512_ps256(terms)));
    high = _mm512_add_pd(high, _mm512_cvtps_pd(upper));
  }
  double sums[16];
  _mm512_storeu_pd(sums, low);
  _mm512_storeu_pd(sums + 8, high);
  for (int64_t k = 0; k < left; ++k) dst[c + k] = MeanLevel<D>(sums[k], s.count);
}

// Each (image, 16-channel block) is one task.
template <typename T, typename D>
void ChannelsLast512(const MeanShape& s, const T* src, const FoldedScaleShift& f,
                     const LevelAct& act, D* dst) {
  const int64_t blocks = (s.channels + 15) / 16;
#pragma omp parallel for schedule(static)
  for (int64_t task = 0; task < s.batch * blocks; ++task) {
    const int64_t n = task / blocks;
    Block512(s, src + n * s.count * s.channels, f, act, task % blocks * 16, dst + n * s.channels);
  }
}

template <typename T, typename D>
void Run(const MeanShape& s, const void* src, const FoldedScaleShift& f, void* dst, MeanIsa isa) {
  const LevelAct act{f.negative_slope, f.clamp_lo, f.clamp_hi};
  if (s.layout == MeanLayout::kPlanar) {
    Planar(s, static_cast<const T*>(src), f, act, static_cast<D*>(dst));
  } else if (isa == MeanIsa::kAvx512) {
    ChannelsLast512(s, static_cast<const T*>(src), f, act, static_cast<D*>(dst));
  } else {
    ChannelsLast(s, static_cast<const T*>(src), f, act, static_cast<D*>(dst));
  }
}

template <typename T>
void RunFrom(const MeanShape& s, const void* src, const FoldedScaleShift& f, QuantType dst_type,
             void* dst, MeanIsa isa) {
  if (dst_type == QuantType::kInt8) {
    Run<T, int8_t>(s, src, f, dst, isa);
  } else {
    Run<T, uint8_t>(s, src, f, dst, isa);
  }
}

}  // namespace

MeanSource MeanSourceOf(QuantType type) {
  return type == QuantType::kInt8 ? MeanSource::kInt8 : MeanSource::kUint8;
}

void MeanOfActivation(const MeanShape& shape, MeanSource src_type, const void* src,
                      const FoldedScaleShift& folded, QuantType dst_type, void* dst, MeanIsa isa) {
  switch (src_type) {
    case MeanSource::kInt8:
      RunFrom<int8_t>(shape, src, folded, dst_type, dst, isa);
      break;
    case MeanSource::kUint8:
      RunFrom<uint8_t>(shape, src, folded, dst_type, dst, isa);
      break;
    case MeanSource::kFloat32:
      RunFrom<float>(shape, src, folded, dst_type, dst, isa);
      break;
  }
}

}  // namespace bnq
