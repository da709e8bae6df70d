// The kernel of _contrib_quantized_avg_pool_batch_norm: 2-D average pooling
// of int8/uint8 NCHW data followed by a quantized BatchNorm and its
// activation, taken on the unrounded mean and rounded once,
//
//     dst[n, c, y, x] = saturate(round(act(mean(src[n, c, window]) * scale[c] + shift[c])))
//
// with scale/shift the fold from the input's levels to the output's
// (FoldedScaleShift: a BatchNorm is per-channel affine, so it commutes with
// the mean), as one oneDNN pooling primitive with post-ops: a per-channel
// multiply and add, then the activation (AppendActivation, AppendCurve).
// Rounding the mean first, as the pooling and the BatchNorm as two int8 ops
// do, adds a rounding that the BatchNorm then amplifies.  Channels-last,
// between exact reorders, as a region runs it (the same bits inside and
// outside regions).  oneDNN's pooling keeps its type (it has no uint8 to
// int8 kernel, nor int8 to float32): for a uint8 input and an int8 output or
// back, the input is reordered to float32 (exact), pooled in float32, and
// the reorder to the output rounds once.
// Primitives are cached by shape.  Run() is thread-safe.
//
// AvgPoolMeanKernel is the kernel of the _global_avg_pool form (a network's
// head after an average pooling): the exact mean of each window (float32,
// from an exact reorder to channels-last float32), then BatchNorm +
// activation + the mean over all positions from those unrounded values
// (MeanOfActivation, activation_mean_kernel.h), rounded once into the pooled
// output's range.  MXNet's int8 pooling would round the window means first.
#pragma once

#include <cstdint>
#include <limits>
#include <oneapi/dnnl/dnnl.hpp>

#include "activation_mean_kernel.h"
#include "avg_pooling_kernel.h"
#include "primitive_cache.h"
#include "scale_shift_folding.h"

namespace bnq {

struct AvgPoolBatchNormShape {
  AvgPoolingShape pool;  // pool.type: the source's
  dnnl::memory::data_type dst_type;
  float negative_slope = 1.f;
  float clamp_lo = -std::numeric_limits<float>::infinity();
  float clamp_hi = std::numeric_limits<float>::infinity();
  FusedActivation::Kind curve = FusedActivation::Kind::kNone;

  // What the pooling primitive reads and writes: the one type of source and
  // output, else float32.
  dnnl::memory::data_type pooled_type() const {
    return dst_type == pool.type ? dst_type : dnnl::memory::data_type::f32;
  }

  bool operator==(const AvgPoolBatchNormShape& o) const {
    return pool == o.pool && dst_type == o.dst_type && negative_slope == o.negative_slope &&
           clamp_lo == o.clamp_lo && clamp_hi == o.clamp_hi && curve == o.curve;
  }
};

// The shape for `pool` and the activation of `folded`.
AvgPoolBatchNormShape MakeAvgPoolBatchNormShape(const AvgPoolingShape& pool,
                                                const FoldedScaleShift& folded, QuantType dst_type);

// The pooling primitive descriptor with the post-ops; the per-channel scale
// and shift are the arguments kPoolBnScaleArg and kPoolBnShiftArg (f32
// vectors of C, PoolBnChannelDesc), a curve's output scale the argument set
// in `output_scale_arg` (0: no curve).
dnnl::pooling_forward::primitive_desc AvgPoolBatchNormDesc(const dnnl::engine& engine,
                                                           const AvgPoolBatchNormShape& shape,
                                                           const dnnl::memory::desc& src_md,
                                                           const dnnl::memory::desc& dst_md,
                                                           int* output_scale_arg);
dnnl::memory::desc PoolBnChannelDesc(int64_t channels);
constexpr int kPoolBnScaleArg = DNNL_ARG_ATTR_MULTIPLE_POST_OP(0) | DNNL_ARG_SRC_1;
constexpr int kPoolBnShiftArg = DNNL_ARG_ATTR_MULTIPLE_POST_OP(1) | DNNL_ARG_SRC_1;

class AvgPoolBatchNormKernel {
 public:
  static constexpr size_t kCacheCapacity = 8;

  AvgPoolBatchNormKernel();

  // src, dst: plain NCHW.  Throws dnnl::error on a oneDNN failure.
  void Run(const AvgPoolBatchNormShape& shape, const void* src, const FoldedScaleShift& folded,
           void* dst);

 private:
  struct Primitives {
    dnnl::reorder to_nhwc, to_nchw;
    dnnl::pooling_forward pool;
    dnnl::memory::desc nhwc_src, nhwc_pooled;
    int output_scale_arg = 0;
  };
  Primitives Make(const AvgPoolBatchNormShape& shape) const;

  dnnl::engine engine_;
  PrimitiveCache<AvgPoolBatchNormShape, Primitives, kCacheCapacity> cache_;
};

// The window means of `shape` (its type: the source's) as channels-last
// float32: the pooling primitive of AvgPoolingDesc with scale 1 (exact).
dnnl::pooling_forward::primitive_desc FloatAvgPoolingDesc(const dnnl::engine& engine,
                                                          const AvgPoolingShape& shape);

class AvgPoolMeanKernel {
 public:
  static constexpr size_t kCacheCapacity = 8;

  AvgPoolMeanKernel();

  // src: plain NCHW of `shape`; folded: a fold with mean_follows; dst:
  // N x C of dst_type.  Throws dnnl::error on a oneDNN failure.
  void Run(const AvgPoolingShape& shape, const void* src, const FoldedScaleShift& folded,
           QuantType dst_type, void* dst);

 private:
  struct Primitives {
    dnnl::reorder to_float;
    dnnl::pooling_forward pool;
    dnnl::memory::desc float_src, pooled;
  };
  Primitives Make(const AvgPoolingShape& shape) const;

  dnnl::engine engine_;
  PrimitiveCache<AvgPoolingShape, Primitives, kCacheCapacity> cache_;
};

}  // namespace bnq
