// The pooling kernel: the mean of each row of a plain row-major uint8 matrix,
//
//     dst[r] = saturate(round(sum_k src[r, k] / inner))
//
// i.e. global average pooling of (N, C, spatial...) data viewed as
// (N * C, spatial).  oneDNN's pooling and reduction primitives are slow on
// such plain int8 layouts (a reference kernel, or a jit kernel tuned for long
// rows), so it is a u8 x s8 `matmul` against a column of ones with the weight
// scale 1 / inner: exact int32 sums, one rounding (to nearest even).
//
// Primitives depend only on the shape, so they are cached (bounded, least
// recently used first out).  Run() is thread-safe.
#pragma once

#include <cstdint>
#include <list>
#include <mutex>
#include <utility>

#include <oneapi/dnnl/dnnl.hpp>

namespace bnq {

class ChannelMeanKernel {
 public:
  static constexpr size_t kCacheCapacity = 8;

  ChannelMeanKernel();

  // src: rows x inner uint8, dst: rows uint8.  Throws dnnl::error on a
  // oneDNN failure.
  void Run(int64_t rows, int64_t inner, const uint8_t* src, uint8_t* dst);

 private:
  struct Entry {
    int64_t rows;
    int64_t inner;
    dnnl::matmul primitive;
    dnnl::memory ones;  // inner x 1 int8 ones, owned by the entry
  };
  Entry& GetEntry(int64_t rows, int64_t inner);  // with mutex_ held

  dnnl::engine engine_;
  std::mutex mutex_;
  std::list<Entry> cache_;  // front = most recent
};

}  // namespace bnq
