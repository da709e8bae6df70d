#include "avg_pooling_kernel.h"

#include <algorithm>
#include <cmath>

#include "scale_shift_kernel.h"

namespace bnq {
namespace {

using tag = dnnl::memory::format_tag;

}  // namespace

bool MakeAvgPoolingShape(const PoolingAttrs& pool, const dnnl::memory::dims& src,
                         dnnl::memory::data_type type, AvgPoolingShape* shape, std::string* why) {
  if (src.size() != 4) {
    *why = "expects 4-D NCHW data";
    return false;
  }
  AvgPoolingShape s;
  s.src = src;
  s.dst = {src[0], src[1], 0, 0};
  s.pad_r.assign(2, 0);
  for (int i = 0; i < 2; ++i) {
    if (!PooledSize(pool, i, src[2 + i], &s.dst[2 + i], &s.pad_r[i])) {
      *why = "the pooling kernel is larger than the padded input";
      return false;
    }
  }
  s.kernel = pool.global ? dnnl::memory::dims{src[2], src[3]}
                         : dnnl::memory::dims{pool.kernel[0], pool.kernel[1]};
  s.stride =
      pool.global ? dnnl::memory::dims{1, 1} : dnnl::memory::dims{pool.stride[0], pool.stride[1]};
  s.pad_l = pool.global ? dnnl::memory::dims{0, 0} : dnnl::memory::dims{pool.pad[0], pool.pad[1]};
  s.count_include_pad = pool.count_include_pad;
  s.type = type;
  *shape = s;
  return true;
}

dnnl::pooling_forward::primitive_desc AvgPoolingDesc(const dnnl::engine& engine,
                                                     const AvgPoolingShape& shape,
                                                     const dnnl::memory::desc& src_md,
                                                     const dnnl::memory::desc& dst_md) {
  dnnl::post_ops ops;
  ops.append_binary(dnnl::algorithm::binary_mul, ScalarDesc(4));
  dnnl::primitive_attr attr;
  attr.set_post_ops(ops);
  const auto alg = shape.count_include_pad ? dnnl::algorithm::pooling_avg_include_padding
                                           : dnnl::algorithm::pooling_avg_exclude_padding;
  return dnnl::pooling_forward::primitive_desc(engine, dnnl::prop_kind::forward_inference, alg,
                                               src_md, dst_md, shape.stride, shape.kernel, {0, 0},
                                               shape.pad_l, shape.pad_r, attr);
}

AvgPoolingRange AvgPoolingOutputRange(bool calibrated, float min_calib, float max_calib,
                                      float min_data, float max_data) {
  const float range_in = std::max(std::fabs(min_data), std::fabs(max_data));
  const float range_out = std::max(std::fabs(min_calib), std::fabs(max_calib));
  if (!calibrated || range_out >= range_in) return {min_data, max_data, 1.f};
  return {min_calib, max_calib, range_out > 0 ? range_in / range_out : 0.f};
}

AvgPoolingKernel::AvgPoolingKernel() : engine_(dnnl::engine::kind::cpu, 0) {}

AvgPoolingKernel::Primitives AvgPoolingKernel::Make(const AvgPoolingShape& shape) const {
  Primitives p;
  p.nhwc_src = dnnl::memory::desc(shape.src, shape.type, tag::nhwc);
  p.nhwc_dst = dnnl::memory::desc(shape.dst, shape.type, tag::nhwc);
  const dnnl::memory::desc nchw_src(shape.src, shape.type, tag::nchw);
  const dnnl::memory::desc nchw_dst(shape.dst, shape.type, tag::nchw);
  p.to_nhwc = dnnl::reorder(dnnl::reorder::primitive_desc(engine_, nchw_src, engine_, p.nhwc_src));
  p.pool = dnnl::pooling_forward(AvgPoolingDesc(engine_, shape, p.nhwc_src, p.nhwc_dst));
  p.to_nchw = dnnl::reorder(dnnl::reorder::primitive_desc(engine_, p.nhwc_dst, engine_, nchw_dst));
  return p;
}

void AvgPoolingKernel::Run(const AvgPoolingShape& shape, const void* src, float scale, void* dst) {
  const Primitives p = cache_.Get(shape, [&] { return Make(shape); });
  // oneDNN takes non-const handles; src is only read.
  dnnl::memory src_mem({shape.src, shape.type, tag::nchw}, engine_, const_cast<void*>(src));
  dnnl::memory dst_mem({shape.dst, shape.type, tag::nchw}, engine_, dst);
  dnnl::memory nhwc_src(p.nhwc_src, engine_), nhwc_dst(p.nhwc_dst, engine_);
  dnnl::memory scale_mem(ScalarDesc(4), engine_, &scale);
  dnnl::stream stream(engine_);
  p.to_nhwc.execute(stream, src_mem, nhwc_src);
  p.pool.execute(
      stream,
      {{DNNL_ARG_SRC, nhwc_src}, {DNNL_ARG_DST, nhwc_dst}, {kAvgPoolingScaleArg, scale_mem}});
  p.to_nchw.execute(stream, nhwc_dst, dst_mem);
  stream.wait();
}

}  // namespace bnq
