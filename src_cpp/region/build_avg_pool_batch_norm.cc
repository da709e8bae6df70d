// The region steps of the BatchNorm ops that take an average pooling in
// (_contrib_quantized_avg_pool_batch_norm, the concat forms and their
// _global_avg_pool heads): the kernels those ops run outside regions
// (avg_pool_batch_norm_kernel.h), on channels-last data, so the same bits.
#include <string>
#include <utility>
#include <vector>

#include "../avg_pool_batch_norm_kernel.h"
#include "../scale_shift_kernel.h"
#include "region_builder.h"

namespace bnq {
namespace region {

// One input: the pooling primitive with the per-channel post-ops (through
// float32, an exact reorder in and the rounding reorder out, when the input
// and output types differ), or for a head the exact window means (float32)
// and then BN+act and the mean over every position from them.
CompiledRegion::Builder::PooledSteps CompiledRegion::Builder::AvgPoolBatchNormSteps(
    const Node* node, const std::string& what, int src, const AvgPoolingShape& pool,
    const FoldedScaleShift& folded, QuantType out_type, bool head) {
  PooledSteps steps;
  const int64_t c = pool.src[1];
  if (head) {
    const dnnl::pooling_forward::primitive_desc pd = FloatAvgPoolingDesc(r_.engine_, pool);
    src = InLayout(node, src, pd.src_desc());
    const int means = NewValue(pd.dst_desc());
    PrimitiveStep* s = AddStep(node, what + "/window_means", dnnl::pooling_forward(pd));
    s->Read(DNNL_ARG_SRC, src, pd.src_desc());
    const float one = 1.f;
    s->Constant(kAvgPoolingScaleArg, Owned(r_.engine_, ScalarDesc(4), &one));
    s->Write(DNNL_ARG_DST, means, pd.dst_desc());
    const MeanShape shape{pool.dst[0], c, pool.dst[2] * pool.dst[3], MeanLayout::kChannelsLast};
    const dt dst_type = ToDnnl(out_type);
    steps.value = NewValue(PlainDesc({pool.dst[0], c, 1, 1}, dst_type));
    steps.mean = new ActivationMeanStep(node->name + what, means, steps.value, folded, dt::f32,
                                        dst_type, shape, MeanKernelIsa());
    r_.steps_.emplace_back(steps.mean);
    steps.first = steps.mean;
    return steps;
  }
  const AvgPoolBatchNormShape shape = MakeAvgPoolBatchNormShape(pool, folded, out_type);
  const dt pooled = shape.pooled_type();
  const dnnl::memory::desc src_md(pool.src, pooled, tag::nhwc);
  const dnnl::memory::desc pooled_md(pool.dst, pooled, tag::nhwc);
  src = InLayout(node, src, src_md);
  const dnnl::pooling_forward::primitive_desc pd =
      AvgPoolBatchNormDesc(r_.engine_, shape, src_md, pooled_md, &steps.output_scale_arg);
  const int pooled_value = NewValue(pooled_md);
  PrimitiveStep* s = AddStep(node, what, dnnl::pooling_forward(pd));
  s->Read(DNNL_ARG_SRC, src, src_md);
  const dnnl::memory::desc channel_md = PoolBnChannelDesc(c);
  s->Constant(kPoolBnScaleArg, Owned(r_.engine_, channel_md, folded.scale.data()));
  s->Constant(kPoolBnShiftArg, Owned(r_.engine_, channel_md, folded.shift.data()));
  if (steps.output_scale_arg != 0) {
    s->Constant(steps.output_scale_arg, Owned(r_.engine_, ScalarDesc(4), &folded.output_scale));
  }
  s->Write(DNNL_ARG_DST, pooled_value, pooled_md);
  steps.value = InLayout(node, pooled_value, WithType(pooled_md, ToDnnl(out_type)));
  steps.pool = s;
  steps.first = s;
  return steps;
}

void CompiledRegion::Builder::SetFold(const PooledSteps& steps, FoldedScaleShift folded) {
  if (steps.mean != nullptr) {
    steps.mean->SetScaleShift(std::move(folded));
    return;
  }
  std::copy(folded.scale.begin(), folded.scale.end(), steps.pool->ConstantFloats(kPoolBnScaleArg));
  std::copy(folded.shift.begin(), folded.shift.end(), steps.pool->ConstantFloats(kPoolBnShiftArg));
  if (steps.output_scale_arg != 0) {
    *steps.pool->ConstantFloats(steps.output_scale_arg) = folded.output_scale;
  }
}

void CompiledRegion::Builder::AvgPoolBatchNorm(const Node* node, const BatchNormOpAttrs& a) {
  const int data = Data(node->inputs[0]);
  const dnnl::memory::desc in_md = r_.values_[data].md;
  AvgPoolingShape pool;
  std::string why;
  if (!MakeAvgPoolingShape(a.avg_pool, in_md.get_dims(), in_md.get_data_type(), &pool, &why)) {
    Fail(node, why);
  }
  const int64_t c = pool.src[1];
  // Copies: a rescale hook folds them again at each forward.
  const std::vector<float> gamma = Floats(Param(node->inputs[1], mxnet::ext::kFloat32, c));
  const std::vector<float> beta = Floats(Param(node->inputs[2], mxnet::ext::kFloat32, c));
  const std::vector<float> mean = Floats(Param(node->inputs[3], mxnet::ext::kFloat32, c));
  const std::vector<float> var = Floats(Param(node->inputs[4], mxnet::ext::kFloat32, c));
  const QuantType in_type = ToQuantType(in_md.get_data_type(), node);
  const QuantType out_type = FusedOutputType(a.bn.act);
  const RangeEnd in_lo = End(node->inputs[5]), in_hi = End(node->inputs[6]);
  const bool run_time = AtRunTime({in_lo, in_hi});
  const std::string name = node->name;
  auto fold = [=](float min, float max) {
    const ChannelParams params{gamma.data(), beta.data(), mean.data(), var.data(), c};
    FoldedScaleShift folded;
    std::string error;
    if (!FoldScaleShift(a.bn, params, min, max, in_type, out_type, &folded, &error,
                        a.global_avg_pool)) {
      throw std::runtime_error(name + ": " + error);
    }
    return folded;
  };
  // At build time a measured range is not known yet: any valid one makes the steps.
  const FoldedScaleShift folded = fold(run_time ? 0.f : in_lo.value, run_time ? 1.f : in_hi.value);
  const PooledSteps steps =
      AvgPoolBatchNormSteps(node, "", data, pool, folded, out_type, a.global_avg_pool);
  if (!run_time) {
    SetOutputs(node, steps.value, folded.min_output, folded.max_output);
    return;
  }
  const int slot = NewRangeSlots();
  steps.first->set_rescale([=](Ranges& ranges) {
    FoldedScaleShift f = fold(in_lo.Get(ranges), in_hi.Get(ranges));
    ranges[slot] = f.min_output;
    ranges[slot + 1] = f.max_output;
    SetFold(steps, std::move(f));
  });
  SetOutputs(node, steps.value, Slot(slot), Slot(slot + 1));
}

// Average pooling works on each channel alone: each input is pooled with
// the BatchNorm of its channels, in its own range, and the results are
// concatenated (as the op outside regions writes each into its channels).
int CompiledRegion::Builder::ConcatAvgPoolBatchNorm(const Node* node, const BatchNormOpAttrs& a,
                                                    const std::vector<int>& srcs,
                                                    const std::vector<FoldedScaleShift>& folded,
                                                    QuantType out_type,
                                                    const ConcatRefold& refold) {
  const size_t n = srcs.size();
  std::vector<PooledSteps> parts(n);
  std::vector<dnnl::memory::desc> mds;
  for (size_t i = 0; i < n; ++i) {
    const dnnl::memory::desc md = r_.values_[srcs[i]].md;
    AvgPoolingShape pool;
    std::string why;
    if (!MakeAvgPoolingShape(a.avg_pool, md.get_dims(), md.get_data_type(), &pool, &why)) {
      Fail(node, "input " + std::to_string(i) + ": " + why);
    }
    parts[i] = AvgPoolBatchNormSteps(node, "/" + std::to_string(i), srcs[i], pool, folded[i],
                                     out_type, a.global_avg_pool);
    mds.push_back(r_.values_[parts[i].value].md);
  }
  dims out_dims = mds[0].get_dims();
  out_dims[1] = 0;
  for (const auto& md : mds) out_dims[1] += md.get_dims()[1];
  dnnl::concat::primitive_desc pd(r_.engine_,
                                  dnnl::memory::desc(out_dims, ToDnnl(out_type), tag::any), 1, mds);
  const int dst = NewValue(pd.dst_desc());
  PrimitiveStep* s = AddStep(node, "/concat", dnnl::concat(pd));
  for (size_t i = 0; i < n; ++i) s->Read(DNNL_ARG_MULTIPLE_SRC + i, parts[i].value, mds[i]);
  s->Write(DNNL_ARG_DST, dst, pd.dst_desc());
  if (refold) {
    parts[0].first->set_rescale([=](Ranges& ranges) {
      std::vector<FoldedScaleShift> f = refold(ranges);
      for (size_t i = 0; i < n; ++i) SetFold(parts[i], std::move(f[i]));
    });
  }
  return dst;
}

}  // namespace region
}  // namespace bnq
