#include "scale_shift_kernel.h"

#include <algorithm>

namespace bnq {
namespace {

using dt = dnnl::memory::data_type;
using tag = dnnl::memory::format_tag;

// Channels-last data (inner == 1) is described in 2-D so that oneDNN sees a
// plain per-column broadcast.
dnnl::memory::dims DataDims(const ScaleShiftShape& s) {
  if (s.inner == 1) return {s.outer, s.channels};
  return {s.outer, s.channels, s.inner};
}

dnnl::memory::dims ChannelDims(const ScaleShiftShape& s) {
  if (s.inner == 1) return {1, s.channels};
  return {1, s.channels, 1};
}

tag PlainTag(const ScaleShiftShape& s) { return s.inner == 1 ? tag::ab : tag::abc; }

}  // namespace

void AppendActivation(float negative_slope, float clamp_lo, float clamp_hi, dnnl::post_ops* ops) {
  if (negative_slope != 1.f)
    ops->append_eltwise(dnnl::algorithm::eltwise_relu, negative_slope, 0.f);
  if (clamp_lo > -std::numeric_limits<float>::infinity() ||
      clamp_hi < std::numeric_limits<float>::infinity()) {
    // oneDNN's clip takes finite bounds; the float limits clip nothing more.
    const float lo = std::max(clamp_lo, std::numeric_limits<float>::lowest());
    const float hi = std::min(clamp_hi, std::numeric_limits<float>::max());
    ops->append_eltwise(dnnl::algorithm::eltwise_clip, lo, hi);
  }
}

ScaleShiftKernel::ScaleShiftKernel() : engine_(dnnl::engine::kind::cpu, 0) {}

dnnl::binary ScaleShiftKernel::MakePrimitive(const ScaleShiftShape& shape) const {
  const auto plain = PlainTag(shape);
  const dnnl::memory::desc src_md(DataDims(shape), shape.src_type, plain);
  const dnnl::memory::desc channel_md(ChannelDims(shape), dt::f32, plain);
  const dnnl::memory::desc dst_md(DataDims(shape), shape.dst_type, plain);

  dnnl::post_ops ops;
  ops.append_binary(dnnl::algorithm::binary_add, channel_md);
  AppendActivation(shape.negative_slope, shape.clamp_lo, shape.clamp_hi, &ops);
  dnnl::primitive_attr attr;
  attr.set_post_ops(ops);
  const dnnl::binary::primitive_desc pd(engine_, dnnl::algorithm::binary_mul, src_md, channel_md,
                                        dst_md, attr);
  return dnnl::binary(pd);
}

void ScaleShiftKernel::Run(const ScaleShiftShape& shape, const void* src, const float* scale,
                           const float* shift, void* dst) {
  dnnl::binary prim = cache_.Get(shape, [&] { return MakePrimitive(shape); });
  const auto plain = PlainTag(shape);
  // oneDNN takes non-const handles; src, scale and shift are only read.
  dnnl::memory src_mem({DataDims(shape), shape.src_type, plain}, engine_, const_cast<void*>(src));
  dnnl::memory scale_mem({ChannelDims(shape), dt::f32, plain}, engine_, const_cast<float*>(scale));
  dnnl::memory shift_mem({ChannelDims(shape), dt::f32, plain}, engine_, const_cast<float*>(shift));
  dnnl::memory dst_mem({DataDims(shape), shape.dst_type, plain}, engine_, dst);

  dnnl::stream stream(engine_);
  prim.execute(stream, {{DNNL_ARG_SRC_0, src_mem},
                        {DNNL_ARG_SRC_1, scale_mem},
                        {DNNL_ARG_ATTR_MULTIPLE_POST_OP(0) | DNNL_ARG_SRC_1, shift_mem},
                        {DNNL_ARG_DST, dst_mem}});
  stream.wait();
}

}  // namespace bnq
