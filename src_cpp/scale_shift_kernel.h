// The compute kernel: a per-channel affine map on int8/uint8 (or float32) data,
// and the fused activation in levels (FoldedScaleShift),
//
//     dst[o, c, i] = saturate(round(act(src[o, c, i] * scale[c] + shift[c])))
//
// as one oneDNN `binary` primitive (multiply by scale) with a `binary` add
// post-op (shift) and, for leaky ReLU or clip bounds, an eltwise post-op
// (relu with alpha = slope, clip), on plain row-major data viewed as
// (outer, channels, inner).  A curve is an eltwise post-op too, followed by
// a binary multiply by the output scale (a scalar argument, so that a range
// found at run time needs no new primitive).
// oneDNN runs it multi-threaded at close to memory speed on plain layouts,
// unlike its s8 batch_normalization primitive.  Rounding is to nearest even,
// saturating to the destination type.
//
// Primitives depend only on the view and the data types, so they are cached
// (bounded, least recently used first out).  Run() is thread-safe.
#pragma once

#include <cstdint>
#include <limits>
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
  // The activation (FoldedScaleShift's; 1, -inf, +inf: none).
  float negative_slope = 1.f;
  float clamp_lo = -std::numeric_limits<float>::infinity();
  float clamp_hi = std::numeric_limits<float>::infinity();
  FusedActivation::Kind curve = FusedActivation::Kind::kNone;
  // The channels of a dst row when dst is a slice of a wider tensor (outer,
  // dst_channels, inner) that starts at the slice's first element (a
  // concatenation's part); 0: dst is dense like src.
  int64_t dst_channels = 0;

  bool operator==(const ScaleShiftShape& o) const {
    return outer == o.outer && channels == o.channels && inner == o.inner &&
           src_type == o.src_type && dst_type == o.dst_type && negative_slope == o.negative_slope &&
           clamp_lo == o.clamp_lo && clamp_hi == o.clamp_hi && curve == o.curve &&
           dst_channels == o.dst_channels;
  }
};

inline dnnl::memory::data_type ToDnnl(QuantType t) {
  return t == QuantType::kInt8 ? dnnl::memory::data_type::s8 : dnnl::memory::data_type::u8;
}

// Appends the activation in levels (FoldedScaleShift's negative_slope and
// clamp bounds) to `ops` as eltwise post-ops; nothing for none.
void AppendActivation(float negative_slope, float clamp_lo, float clamp_hi, dnnl::post_ops* ops);

// Appends a curve (FoldedScaleShift::curve) and the multiply by the output
// scale, read from a one-element f32 memory of `ndims` dimensions; returns
// that memory's execution argument, or 0 without a curve (nothing appended).
int AppendCurve(FusedActivation::Kind curve, int ndims, dnnl::post_ops* ops);

// The one-element f32 memory descriptor of AppendCurve's output scale.
dnnl::memory::desc ScalarDesc(int ndims);

class ScaleShiftKernel {
 public:
  static constexpr size_t kCacheCapacity = 8;

  ScaleShiftKernel();

  // Throws dnnl::error on a oneDNN failure.
  // `output_scale` is FoldedScaleShift's (used with a curve only).
  void Run(const ScaleShiftShape& shape, const void* src, const float* scale, const float* shift,
           float output_scale, void* dst);

  // The primitive cache's (hits, misses).
  std::pair<uint64_t, uint64_t> CacheCounts() { return cache_.Counts(); }

 private:
  static dnnl::post_ops PostOps(const ScaleShiftShape& shape, int* output_scale_arg);
  dnnl::binary MakePrimitive(const ScaleShiftShape& shape) const;

  dnnl::engine engine_;
  PrimitiveCache<ScaleShiftShape, dnnl::binary, kCacheCapacity> cache_;
};

}  // namespace bnq
