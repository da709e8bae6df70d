#include "scale_shift_kernel.h"

#include <algorithm>
#include <stdexcept>
#include <unordered_map>

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

// dst: plain like src, or a channel slice of a tensor with dst_channels.
dnnl::memory::desc DstDesc(const ScaleShiftShape& s) {
  if (s.dst_channels == 0 || s.dst_channels == s.channels) {
    return {DataDims(s), s.dst_type, PlainTag(s)};
  }
  if (s.inner == 1) return {DataDims(s), s.dst_type, {s.dst_channels, 1}};
  return {DataDims(s), s.dst_type, {s.dst_channels * s.inner, s.inner, 1}};
}

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

namespace {

dnnl::algorithm CurveAlgorithm(FusedActivation::Kind curve) {
  using Kind = FusedActivation::Kind;
  switch (curve) {
    case Kind::kSigmoid:
      return dnnl::algorithm::eltwise_logistic;
    case Kind::kTanh:
      return dnnl::algorithm::eltwise_tanh;
    case Kind::kSoftRelu:  // log(1 + exp(alpha x)) / alpha
      return dnnl::algorithm::eltwise_soft_relu;
    case Kind::kGelu:  // MXNet's gelu is the erf form
      return dnnl::algorithm::eltwise_gelu_erf;
    default:
      break;
  }
  throw std::invalid_argument("not a curve");
}

}  // namespace

dnnl::memory::desc ScalarDesc(int ndims) {
  return {dnnl::memory::dims(ndims, 1), dt::f32, dnnl::memory::dims(ndims, 1)};
}

int AppendCurve(FusedActivation::Kind curve, int ndims, dnnl::post_ops* ops) {
  if (curve == FusedActivation::Kind::kNone) return 0;
  ops->append_eltwise(CurveAlgorithm(curve), 1.f, 0.f);
  ops->append_binary(dnnl::algorithm::binary_mul, ScalarDesc(ndims));
  return DNNL_ARG_ATTR_MULTIPLE_POST_OP(ops->len() - 1) | DNNL_ARG_SRC_1;
}

ScaleShiftKernel::ScaleShiftKernel() : engine_(dnnl::engine::kind::cpu, 0) {}

// The post-ops after the multiply; sets the output scale's argument (0: none).
dnnl::post_ops ScaleShiftKernel::PostOps(const ScaleShiftShape& shape, int* output_scale_arg) {
  dnnl::post_ops ops;
  ops.append_binary(dnnl::algorithm::binary_add,
                    dnnl::memory::desc(ChannelDims(shape), dt::f32, PlainTag(shape)));
  AppendActivation(shape.negative_slope, shape.clamp_lo, shape.clamp_hi, &ops);
  *output_scale_arg = AppendCurve(shape.curve, static_cast<int>(DataDims(shape).size()), &ops);
  return ops;
}

dnnl::binary ScaleShiftKernel::MakePrimitive(const ScaleShiftShape& shape) const {
  const auto plain = PlainTag(shape);
  const dnnl::memory::desc src_md(DataDims(shape), shape.src_type, plain);
  const dnnl::memory::desc channel_md(ChannelDims(shape), dt::f32, plain);
  const dnnl::memory::desc dst_md = DstDesc(shape);
  int unused = 0;
  dnnl::primitive_attr attr;
  attr.set_post_ops(PostOps(shape, &unused));
  const dnnl::binary::primitive_desc pd(engine_, dnnl::algorithm::binary_mul, src_md, channel_md,
                                        dst_md, attr);
  return dnnl::binary(pd);
}

void ScaleShiftKernel::Run(const ScaleShiftShape& shape, const void* src, const float* scale,
                           const float* shift, float output_scale, void* dst) {
  dnnl::binary prim = cache_.Get(shape, [&] { return MakePrimitive(shape); });
  const auto plain = PlainTag(shape);
  // oneDNN takes non-const handles; src, scale and shift are only read.
  dnnl::memory src_mem({DataDims(shape), shape.src_type, plain}, engine_, const_cast<void*>(src));
  dnnl::memory scale_mem({ChannelDims(shape), dt::f32, plain}, engine_, const_cast<float*>(scale));
  dnnl::memory shift_mem({ChannelDims(shape), dt::f32, plain}, engine_, const_cast<float*>(shift));
  dnnl::memory dst_mem(DstDesc(shape), engine_, dst);

  std::unordered_map<int, dnnl::memory> args = {
      {DNNL_ARG_SRC_0, src_mem},
      {DNNL_ARG_SRC_1, scale_mem},
      {DNNL_ARG_ATTR_MULTIPLE_POST_OP(0) | DNNL_ARG_SRC_1, shift_mem},
      {DNNL_ARG_DST, dst_mem}};
  int output_scale_arg = 0;
  PostOps(shape, &output_scale_arg);
  if (output_scale_arg != 0) {
    const int ndims = static_cast<int>(DataDims(shape).size());
    args[output_scale_arg] = dnnl::memory(ScalarDesc(ndims), engine_, &output_scale);
  }
  dnnl::stream stream(engine_);
  prim.execute(stream, args);
  stream.wait();
}

}  // namespace bnq
