// The compute kernel: a per-channel affine map on int8/uint8 (or float32) data,
//
//     dst[o, c, i] = saturate(round(src[o, c, i] * scale[c] + shift[c]))
//
// as one oneDNN `binary` primitive (multiply by scale) with a `binary` add
// post-op (shift), on plain row-major data viewed as (outer, channels, inner).
// oneDNN runs it multi-threaded at close to memory speed on plain layouts,
// unlike its s8 batch_normalization primitive.  Rounding is to nearest even,
// saturating to the destination type.
//
// Primitives depend only on the view and the data types, so they are cached
// (bounded, least recently used first out).  Run() is thread-safe.
#pragma once

#include <cstdint>
#include <oneapi/dnnl/dnnl.hpp>
#include <utility>

#include "primitive_cache.h"
#include "scale_shift_folding.h"

namespace bnq {

struct ScaleShiftShape {
  int64_t outer;
  int64_t channels;
  int64_t inner;
  dnnl::memory::data_type src_type;  // s8, u8 or f32
  dnnl::memory::data_type dst_type;  // s8 or u8

  bool operator==(const ScaleShiftShape& o) const {
    return outer == o.outer && channels == o.channels && inner == o.inner &&
           src_type == o.src_type && dst_type == o.dst_type;
  }
};

inline dnnl::memory::data_type ToDnnl(QuantType t) {
  return t == QuantType::kInt8 ? dnnl::memory::data_type::s8 : dnnl::memory::data_type::u8;
}

class ScaleShiftKernel {
 public:
  static constexpr size_t kCacheCapacity = 8;

  ScaleShiftKernel();

  // Throws dnnl::error on a oneDNN failure.
  void Run(const ScaleShiftShape& shape, const void* src, const float* scale, const float* shift,
           void* dst);

  // The primitive cache's (hits, misses).
  std::pair<uint64_t, uint64_t> CacheCounts() { return cache_.Counts(); }

 private:
  dnnl::binary MakePrimitive(const ScaleShiftShape& shape) const;

  dnnl::engine engine_;
  PrimitiveCache<ScaleShiftShape, dnnl::binary, kCacheCapacity> cache_;
};

}  // namespace bnq
