#include "activation_mean_kernel.h"

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

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

template <typename T, typename D>
void Run(const MeanShape& s, const void* src, const FoldedScaleShift& f, void* dst) {
  const LevelAct act{f.negative_slope, f.clamp_lo, f.clamp_hi};
  if (s.layout == MeanLayout::kPlanar) {
    Planar(s, static_cast<const T*>(src), f, act, static_cast<D*>(dst));
  } else {
    ChannelsLast(s, static_cast<const T*>(src), f, act, static_cast<D*>(dst));
  }
}

template <typename T>
void RunFrom(const MeanShape& s, const void* src, const FoldedScaleShift& f, QuantType dst_type,
             void* dst) {
  if (dst_type == QuantType::kInt8) {
    Run<T, int8_t>(s, src, f, dst);
  } else {
    Run<T, uint8_t>(s, src, f, dst);
  }
}

}  // namespace

MeanSource MeanSourceOf(QuantType type) {
  return type == QuantType::kInt8 ? MeanSource::kInt8 : MeanSource::kUint8;
}

void MeanOfActivation(const MeanShape& shape, MeanSource src_type, const void* src,
                      const FoldedScaleShift& folded, QuantType dst_type, void* dst) {
  switch (src_type) {
    case MeanSource::kInt8:
      RunFrom<int8_t>(shape, src, folded, dst_type, dst);
      break;
    case MeanSource::kUint8:
      RunFrom<uint8_t>(shape, src, folded, dst_type, dst);
      break;
    case MeanSource::kFloat32:
      RunFrom<float>(shape, src, folded, dst_type, dst);
      break;
  }
}

}  // namespace bnq
