// The pooling kernel: the mean of each row of a plain row-major uint8 matrix,
//
//     dst[r] = round_half_to_even(sum_k src[r, k] / inner)
//
// i.e. global average pooling of (N, C, spatial...) data viewed as
// (N * C, spatial), rounded as MXNet's int8 pooling rounds.  oneDNN's pooling
// and reduction primitives are slow on such plain int8 layouts (a reference
// kernel, or a jit kernel tuned for long rows), so the sums come from a u8 x s8
// `matmul` against a column of ones (exact in int32), and the division is
// done in integers: a float 1/inner factor would round some exact halves
// (e.g. 91 / 14 = 6.5) the wrong way.
//
// Primitives depend only on the shape, so they are cached (bounded, least
// recently used first out).  Run() is thread-safe.
#pragma once

#include <cstdint>
#include <oneapi/dnnl/dnnl.hpp>
#include <utility>

#include "primitive_cache.h"

namespace bnq {

// sum / count rounded to nearest, ties to even, for 0 <= sum <= 255 * count.
uint8_t RoundedMean(int32_t sum, int32_t count);

class ChannelMeanKernel {
 public:
  static constexpr size_t kCacheCapacity = 8;
  // Largest row length whose uint8 sum is exact in int32.
  static constexpr int64_t kMaxInner = INT32_MAX / 255;

  ChannelMeanKernel();

  // src: rows x inner uint8 (1 <= inner <= kMaxInner), dst: rows uint8.
  // Throws dnnl::error on a oneDNN failure.
  void Run(int64_t rows, int64_t inner, const uint8_t* src, uint8_t* dst);

 private:
  struct Sums {
    dnnl::matmul primitive;
    dnnl::memory ones;  // inner x 1 int8 ones, owned by oneDNN
  };
  Sums MakeSums(int64_t rows, int64_t inner) const;

  dnnl::engine engine_;
  PrimitiveCache<std::pair<int64_t, int64_t>, Sums, kCacheCapacity> cache_;  // by (rows, inner)
};

}  // namespace bnq
