#include "relu_mean_kernel.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace bnq {
namespace {

// One term of the sum: the BatchNorm+ReLU value in output levels, unrounded.
template <typename T>
inline float Term(T x, float scale, float shift) {
  const float scaled = static_cast<float>(x) * scale;
  const float v = scaled + shift;
  return v > 0.f ? v : 0.f;
}

inline uint8_t MeanLevel(double sum, int64_t count) {
  // nearbyint: to nearest, ties to even (the default rounding mode), as
  // MXNet's int8 pooling rounds; exact halves of integer sums stay exact.
  const double q = std::nearbyint(sum / static_cast<double>(count));
  return static_cast<uint8_t>(std::min(255.0, std::max(0.0, q)));
}

// Rows of `count` values, kRows at a time: their terms are transposed into a
// tile (count x kRows), so that the sums run over contiguous values, each row
// still summed in the order of i.
constexpr int64_t kRows = 16;

template <typename T>
void Planar(const ReluMeanShape& s, const T* src, const float* scale, const float* shift,
            uint8_t* dst) {
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
        const T* x = src + (first + k) * s.count;
#pragma omp simd
        for (int64_t i = 0; i < s.count; ++i) tile[i * kRows + k] = Term(x[i], scale[c], shift[c]);
      }
      double sums[kRows] = {};
      for (int64_t i = 0; i < s.count; ++i) {
        const float* terms = &tile[i * kRows];
#pragma omp simd
        for (int64_t k = 0; k < kRows; ++k) sums[k] += terms[k];  // rows past n: unused
      }
      for (int64_t k = 0; k < n; ++k) dst[first + k] = MeanLevel(sums[k], s.count);
    }
  }
}

template <typename T>
void ChannelsLast(const ReluMeanShape& s, const T* src, const float* scale, const float* shift,
                  uint8_t* dst) {
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
        for (int64_t c = 0; c < s.channels; ++c) terms[c] = Term(x[c], scale[c], shift[c]);
#pragma omp simd
        for (int64_t c = 0; c < s.channels; ++c) sums[c] += terms[c];
      }
      for (int64_t c = 0; c < s.channels; ++c) {
        dst[n * s.channels + c] = MeanLevel(sums[c], s.count);
      }
    }
  }
}

template <typename T>
void Run(const ReluMeanShape& s, const T* src, const float* scale, const float* shift,
         uint8_t* dst) {
  if (s.layout == MeanLayout::kPlanar) {
    Planar(s, src, scale, shift, dst);
  } else {
    ChannelsLast(s, src, scale, shift, dst);
  }
}

}  // namespace

void ReluMeanOfAffine(const ReluMeanShape& shape, bool int8_src, const void* src,
                      const float* scale, const float* shift, uint8_t* dst) {
  if (int8_src) {
    Run(shape, static_cast<const int8_t*>(src), scale, shift, dst);
  } else {
    Run(shape, static_cast<const uint8_t*>(src), scale, shift, dst);
  }
}

}  // namespace bnq
