#include "avg_pool_batch_norm_kernel.h"

#include "scale_shift_kernel.h"

namespace bnq {
namespace {

using tag = dnnl::memory::format_tag;
using dt = dnnl::memory::data_type;

}  // namespace

AvgPoolBatchNormShape MakeAvgPoolBatchNormShape(const AvgPoolingShape& pool,
                                                const FoldedScaleShift& folded,
                                                QuantType dst_type) {
  AvgPoolBatchNormShape s;
  s.pool = pool;
  s.dst_type = ToDnnl(dst_type);
  s.negative_slope = folded.negative_slope;
  s.clamp_lo = folded.clamp_lo;
  s.clamp_hi = folded.clamp_hi;
  s.curve = folded.curve;
  return s;
}

dnnl::memory::desc PoolBnChannelDesc(int64_t channels) {
  return {{1, channels, 1, 1}, dt::f32, tag::nchw};
}

dnnl::pooling_forward::primitive_desc AvgPoolBatchNormDesc(const dnnl::engine& engine,
                                                           const AvgPoolBatchNormShape& shape,
                                                           const dnnl::memory::desc& src_md,
                                                           const dnnl::memory::desc& dst_md,
                                                           int* output_scale_arg) {
  const dnnl::memory::desc channel_md = PoolBnChannelDesc(shape.pool.src[1]);
  dnnl::post_ops ops;
  ops.append_binary(dnnl::algorithm::binary_mul, channel_md);
  ops.append_binary(dnnl::algorithm::binary_add, channel_md);
  AppendActivation(shape.negative_slope, shape.clamp_lo, shape.clamp_hi, &ops);
  *output_scale_arg = AppendCurve(shape.curve, 4, &ops);
  dnnl::primitive_attr attr;
  attr.set_post_ops(ops);
  const AvgPoolingShape& p = shape.pool;
  const auto alg = p.count_include_pad ? dnnl::algorithm::pooling_avg_include_padding
                                       : dnnl::algorithm::pooling_avg_exclude_padding;
  return dnnl::pooling_forward::primitive_desc(engine, dnnl::prop_kind::forward_inference, alg,
                                               src_md, dst_md, p.stride, p.kernel, {0, 0}, p.pad_l,
                                               p.pad_r, attr);
}

AvgPoolBatchNormKernel::AvgPoolBatchNormKernel() : engine_(dnnl::engine::kind::cpu, 0) {}

AvgPoolBatchNormKernel::Primitives AvgPoolBatchNormKernel::Make(
    const AvgPoolBatchNormShape& shape) const {
  const AvgPoolingShape& s = shape.pool;
  Primitives p;
  p.nhwc_src = dnnl::memory::desc(s.src, shape.pooled_type(), tag::nhwc);
  p.nhwc_pooled = dnnl::memory::desc(s.dst, shape.pooled_type(), tag::nhwc);
  const dnnl::memory::desc nchw_src(s.src, s.type, tag::nchw);
  const dnnl::memory::desc nchw_dst(s.dst, shape.dst_type, tag::nchw);
  p.to_nhwc = dnnl::reorder(dnnl::reorder::primitive_desc(engine_, nchw_src, engine_, p.nhwc_src));
  p.pool = dnnl::pooling_forward(
      AvgPoolBatchNormDesc(engine_, shape, p.nhwc_src, p.nhwc_pooled, &p.output_scale_arg));
  p.to_nchw =
      dnnl::reorder(dnnl::reorder::primitive_desc(engine_, p.nhwc_pooled, engine_, nchw_dst));
  return p;
}

void AvgPoolBatchNormKernel::Run(const AvgPoolBatchNormShape& shape, const void* src,
                                 const FoldedScaleShift& folded, void* dst) {
  const Primitives p = cache_.Get(shape, [&] { return Make(shape); });
  const AvgPoolingShape& s = shape.pool;
  // oneDNN takes non-const handles; src, scale and shift are only read.
  dnnl::memory src_mem({s.src, s.type, tag::nchw}, engine_, const_cast<void*>(src));
  dnnl::memory dst_mem({s.dst, shape.dst_type, tag::nchw}, engine_, dst);
  dnnl::memory nhwc_src(p.nhwc_src, engine_), nhwc_pooled(p.nhwc_pooled, engine_);
  const dnnl::memory::desc channel_md = PoolBnChannelDesc(s.src[1]);
  dnnl::memory scale_mem(channel_md, engine_, const_cast<float*>(folded.scale.data()));
  dnnl::memory shift_mem(channel_md, engine_, const_cast<float*>(folded.shift.data()));
  float output_scale = folded.output_scale;
  dnnl::memory output_scale_mem(ScalarDesc(4), engine_, &output_scale);
  std::unordered_map<int, dnnl::memory> args{{DNNL_ARG_SRC, nhwc_src},
                                             {DNNL_ARG_DST, nhwc_pooled},
                                             {kPoolBnScaleArg, scale_mem},
                                             {kPoolBnShiftArg, shift_mem}};
  if (p.output_scale_arg != 0) args[p.output_scale_arg] = output_scale_mem;
  dnnl::stream stream(engine_);
  p.to_nhwc.execute(stream, src_mem, nhwc_src);
  p.pool.execute(stream, args);
  p.to_nchw.execute(stream, nhwc_pooled, dst_mem);
  stream.wait();
}

dnnl::pooling_forward::primitive_desc FloatAvgPoolingDesc(const dnnl::engine& engine,
                                                          const AvgPoolingShape& shape) {
  return AvgPoolingDesc(engine, shape, {shape.src, dt::f32, tag::nhwc},
                        {shape.dst, dt::f32, tag::nhwc});
}

AvgPoolMeanKernel::AvgPoolMeanKernel() : engine_(dnnl::engine::kind::cpu, 0) {}

AvgPoolMeanKernel::Primitives AvgPoolMeanKernel::Make(const AvgPoolingShape& shape) const {
  Primitives p;
  const dnnl::pooling_forward::primitive_desc pd = FloatAvgPoolingDesc(engine_, shape);
  p.float_src = pd.src_desc();
  p.pooled = pd.dst_desc();
  const dnnl::memory::desc nchw_src(shape.src, shape.type, tag::nchw);
  p.to_float =
      dnnl::reorder(dnnl::reorder::primitive_desc(engine_, nchw_src, engine_, p.float_src));
  p.pool = dnnl::pooling_forward(pd);
  return p;
}

void AvgPoolMeanKernel::Run(const AvgPoolingShape& shape, const void* src,
                            const FoldedScaleShift& folded, QuantType dst_type, void* dst) {
  const Primitives p = cache_.Get(shape, [&] { return Make(shape); });
  // oneDNN takes non-const handles; src is only read.
  dnnl::memory src_mem({shape.src, shape.type, tag::nchw}, engine_, const_cast<void*>(src));
  dnnl::memory float_src(p.float_src, engine_), pooled(p.pooled, engine_);
  float one = 1.f;
  dnnl::memory scale_mem(ScalarDesc(4), engine_, &one);
  dnnl::stream stream(engine_);
  p.to_float.execute(stream, src_mem, float_src);
  p.pool.execute(
      stream,
      {{DNNL_ARG_SRC, float_src}, {DNNL_ARG_DST, pooled}, {kAvgPoolingScaleArg, scale_mem}});
  stream.wait();
  const MeanShape mean{shape.dst[0], shape.dst[1], shape.dst[2] * shape.dst[3],
                       MeanLayout::kChannelsLast};
  MeanOfActivation(mean, MeanSource::kFloat32, pooled.get_data_handle(), folded, dst_type, dst);
}

}  // namespace bnq
