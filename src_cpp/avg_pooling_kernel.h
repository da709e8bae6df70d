// The compute kernel of _contrib_quantized_avg_pooling: 2-D average pooling
// of int8/uint8 NCHW data into the same type, with the mean multiplied by a
// scalar (the input's step over the output's) before it is rounded once,
//
//     dst[n, c, y, x] = saturate(round(mean(src[n, c, window]) * scale)),
//
// as one oneDNN pooling primitive with a binary-multiply post-op (the scale a
// run-time argument).  The pooling runs on channels-last data, between two
// exact reorders, so that it is the implementation a region runs (the same
// bits inside and outside regions; oneDNN's int8 pooling kernels are
// channels-last).  Primitives are cached by shape.  Run() is thread-safe.
#pragma once

#include <cstdint>
#include <oneapi/dnnl/dnnl.hpp>
#include <utility>
#include <vector>

#include "pooling_attrs.h"
#include "primitive_cache.h"

namespace bnq {

struct AvgPoolingShape {
  dnnl::memory::dims src;  // N, C, H, W
  dnnl::memory::dims dst;  // N, C, OH, OW
  dnnl::memory::dims kernel, stride, pad_l, pad_r;
  bool count_include_pad = true;
  dnnl::memory::data_type type;  // s8 or u8, source and destination

  bool operator==(const AvgPoolingShape& o) const {
    return src == o.src && dst == o.dst && kernel == o.kernel && stride == o.stride &&
           pad_l == o.pad_l && pad_r == o.pad_r && count_include_pad == o.count_include_pad &&
           type == o.type;
  }
};

// The shape of average pooling `pool` on NCHW `src` dims; false with the
// reason when the kernel does not fit.
bool MakeAvgPoolingShape(const PoolingAttrs& pool, const dnnl::memory::dims& src,
                         dnnl::memory::data_type type, AvgPoolingShape* shape, std::string* why);

// The pooling primitive descriptor of `shape` from `src_md` to `dst_md`
// (channels-last, or format_tag::any) with the scale post-op; the scale is
// the argument kAvgPoolingScaleArg, a one-element f32 memory (ScalarDesc(4)).
dnnl::pooling_forward::primitive_desc AvgPoolingDesc(const dnnl::engine& engine,
                                                     const AvgPoolingShape& shape,
                                                     const dnnl::memory::desc& src_md,
                                                     const dnnl::memory::desc& dst_md);
constexpr int kAvgPoolingScaleArg = DNNL_ARG_ATTR_MULTIPLE_POST_OP(0) | DNNL_ARG_SRC_1;

// The output range and the scale of the mean (the input's step over the
// output's; one type in and out).  The calibrated range when it is narrower
// than the input's; else the input's, with scale 1: every mean of the input
// lies within the input's range (MXNet's op passes it on).
struct AvgPoolingRange {
  float min, max, scale;
};
AvgPoolingRange AvgPoolingOutputRange(bool calibrated, float min_calib, float max_calib,
                                      float min_data, float max_data);

class AvgPoolingKernel {
 public:
  static constexpr size_t kCacheCapacity = 8;

  AvgPoolingKernel();

  // src, dst: plain NCHW.  Throws dnnl::error on a oneDNN failure.
  void Run(const AvgPoolingShape& shape, const void* src, float scale, void* dst);

 private:
  struct Primitives {
    dnnl::reorder to_nhwc, to_nchw;
    dnnl::pooling_forward pool;
    dnnl::memory::desc nhwc_src, nhwc_dst;
  };
  Primitives Make(const AvgPoolingShape& shape) const;

  dnnl::engine engine_;
  PrimitiveCache<AvgPoolingShape, Primitives, kCacheCapacity> cache_;
};

}  // namespace bnq
