// The region steps of pooling, relu, flatten, the plugin's BatchNorm ops
// (those with an average pooling in: build_avg_pool_batch_norm.cc),
// elemwise_add and concat.
#include <algorithm>

#include "../avg_pooling_kernel.h"
#include "../scale_shift_kernel.h"
#include "region_builder.h"

namespace bnq {
namespace region {
namespace {

// With a measured input range, a BatchNorm primitive's per-channel constants
// follow it: at each forward, fold again (`fold(min, max)`), write the output
// range to ranges[slot], slot + 1, and the fold into the step's arguments.
template <typename Fold>
void RefoldConstantsAtRunTime(PrimitiveStep* s, Fold fold, RangeEnd in_lo, RangeEnd in_hi, int slot,
                              int scale_arg, int shift_arg, int output_scale_arg) {
  s->set_rescale([=](Ranges& ranges) {
    const FoldedScaleShift f = fold(in_lo.Get(ranges), in_hi.Get(ranges));
    ranges[slot] = f.min_output;
    ranges[slot + 1] = f.max_output;
    std::copy(f.scale.begin(), f.scale.end(), s->ConstantFloats(scale_arg));
    std::copy(f.shift.begin(), f.shift.end(), s->ConstantFloats(shift_arg));
    if (output_scale_arg != 0) *s->ConstantFloats(output_scale_arg) = f.output_scale;
  });
}

// The same for a hand-written step, which takes the whole fold (SetScaleShift).
template <typename HandStep, typename Fold>
void RefoldStepAtRunTime(HandStep* step, Fold fold, RangeEnd in_lo, RangeEnd in_hi, int slot) {
  step->set_rescale([=](Ranges& ranges) {
    FoldedScaleShift f = fold(in_lo.Get(ranges), in_hi.Get(ranges));
    ranges[slot] = f.min_output;
    ranges[slot + 1] = f.max_output;
    step->SetScaleShift(std::move(f));
  });
}

}  // namespace

void CompiledRegion::Builder::Pooling(const Node* node, PoolingAttrs a) {
  const int data = Data(node->inputs[0]);
  const Value in = r_.values_[data];  // a copy: NewValue() may move the vector
  const dims d = in.md.get_dims();
  if (d.size() != 4) Fail(node, "expects 4-D data");
  dims out_dims{d[0], d[1], 0, 0}, pad_r(2);
  for (int i = 0; i < 2; ++i) {
    if (!PooledSize(a, i, d[2 + i], &out_dims[2 + i], &pad_r[i])) {
      Fail(node, "the pooling kernel is larger than the padded input");
    }
  }
  if (a.global) a.kernel = {d[2], d[3]};
  const dt type = in.md.get_data_type();
  if (a.max && IsChannelsLast(in.md) && (type == dt::s8 || type == dt::u8) &&
      HandKernelIsa() != AffineIsa::kNone) {
    // The hand-vectorized kernel, 3x faster than oneDNN's int8 pooling here.
    const MaxPoolShape shape{d[0],        d[1],        d[2],        d[3],
                             out_dims[2], out_dims[3], a.kernel[0], a.kernel[1],
                             a.stride[0], a.stride[1], a.pad[0],    a.pad[1]};
    if (MaxPoolWindowsNonEmpty(shape)) {
      const int dst = NewValue(ChannelsLast(PlainDesc(out_dims, type)));
      r_.steps_.emplace_back(new MaxPoolStep(node->name, HandKernelIsa(), data, dst, shape, type));
      SetOutputs(node, dst, End(node->inputs[1]), End(node->inputs[2]));
      return;
    }
  }
  const dnnl::algorithm alg = a.max                 ? dnnl::algorithm::pooling_max
                              : a.count_include_pad ? dnnl::algorithm::pooling_avg_include_padding
                                                    : dnnl::algorithm::pooling_avg_exclude_padding;
  dnnl::pooling_forward::primitive_desc pd(
      r_.engine_, dnnl::prop_kind::forward_inference, alg, in.md,
      dnnl::memory::desc(out_dims, in.md.get_data_type(), tag::any), {a.stride[0], a.stride[1]},
      {a.kernel[0], a.kernel[1]}, {0, 0}, {a.pad[0], a.pad[1]}, pad_r);
  const int dst = NewValue(pd.dst_desc());
  PrimitiveStep* s = AddStep(node, "", dnnl::pooling_forward(pd));
  s->Read(DNNL_ARG_SRC, data, in.md);
  s->Write(DNNL_ARG_DST, dst, pd.dst_desc());
  SetOutputs(node, dst, End(node->inputs[1]), End(node->inputs[2]));
}

// The plugin's average pooling (avg_pooling_kernel.h): channels-last in and
// out, the primitive the op runs outside regions, the mean scaled by the
// input's step over the output's.
void CompiledRegion::Builder::AvgPoolingInOwnRange(const Node* node, const PoolingAttrs& a,
                                                   const OwnRange& range) {
  int data = Data(node->inputs[0]);
  const dnnl::memory::desc in_md = r_.values_[data].md;
  AvgPoolingShape shape;
  std::string why;
  if (!MakeAvgPoolingShape(a, in_md.get_dims(), in_md.get_data_type(), &shape, &why)) {
    Fail(node, why);
  }
  const dnnl::memory::desc src_md(shape.src, shape.type, tag::nhwc);
  const dnnl::memory::desc dst_md(shape.dst, shape.type, tag::nhwc);
  data = InLayout(node, data, src_md);
  const RangeEnd in_lo = End(node->inputs[1]), in_hi = End(node->inputs[2]);
  const bool run_time = AtRunTime({in_lo, in_hi});
  // The output range and the scale from the input range.
  auto rule = [=](const Ranges& r) {
    return AvgPoolingOutputRange(range.calibrated, range.min, range.max, in_lo.Get(r),
                                 in_hi.Get(r));
  };
  const AvgPoolingRange built = rule(r_.ranges_);
  const int dst = NewValue(dst_md);
  PrimitiveStep* s =
      AddStep(node, "", dnnl::pooling_forward(AvgPoolingDesc(r_.engine_, shape, src_md, dst_md)));
  s->Read(DNNL_ARG_SRC, data, src_md);
  s->Constant(kAvgPoolingScaleArg, Owned(r_.engine_, ScalarDesc(4), &built.scale));
  s->Write(DNNL_ARG_DST, dst, dst_md);
  if (!run_time) {
    SetOutputs(node, dst, built.min, built.max);
    return;
  }
  const int slot = NewRangeSlots();
  s->set_rescale([=](Ranges& ranges) {
    const AvgPoolingRange now = rule(ranges);
    *s->ConstantFloats(kAvgPoolingScaleArg) = now.scale;
    ranges[slot] = now.min;
    ranges[slot + 1] = now.max;
  });
  SetOutputs(node, dst, Slot(slot), Slot(slot + 1));
}

void CompiledRegion::Builder::Relu(const Node* node) {
  const int data = Data(node->inputs[0]);
  const dnnl::memory::desc md = r_.values_[data].md;
  dnnl::eltwise_forward::primitive_desc pd(r_.engine_, dnnl::prop_kind::forward_inference,
                                           dnnl::algorithm::eltwise_relu, md, md, 0.f, 0.f);
  const int dst = NewValue(md);
  PrimitiveStep* s = AddStep(node, "", dnnl::eltwise_forward(pd));
  s->Read(DNNL_ARG_SRC, data, md);
  s->Write(DNNL_ARG_DST, dst, md);
  SetOutputs(node, dst, End(node->inputs[1]), End(node->inputs[2]));
}

// `value` as a 2-D (N, rest) tensor in NCHW element order.
int CompiledRegion::Builder::Flattened(const Node* node, int value) {
  const Value v = r_.values_[value];  // a copy: NewValue() may move the vector
  const dims d = v.md.get_dims();
  int64_t rest = 1;
  for (size_t i = 1; i < d.size(); ++i) rest *= d[i];
  const dnnl::memory::desc flat({d[0], rest}, v.md.get_data_type(), tag::ab);
  if (d.size() == 2 && v.md == flat) return value;
  // (N, C, 1, 1) in a strided layout is already (N, C): share the bytes.
  bool unit_spatial = true;
  for (size_t i = 2; i < d.size(); ++i) unit_spatial = unit_spatial && d[i] == 1;
  if (unit_spatial && v.kind == ValueKind::kIntermediate && IsStrided(v.md) &&
      v.md.get_strides()[1] == 1 && v.md.get_strides()[0] == rest) {
    const int alias = NewValue(flat);
    r_.values_[alias].alias_of = value;
    return alias;
  }
  const dnnl::memory::desc plain = PlainDesc(d, v.md.get_data_type());
  const int out = NewValue(flat);
  dnnl::reorder::primitive_desc pd(r_.engine_, v.md, r_.engine_, plain);
  PrimitiveStep* s = AddStep(node, "/flatten", dnnl::reorder(pd));
  s->Read(DNNL_ARG_FROM, value, v.md);
  s->Write(DNNL_ARG_TO, out, plain);
  return out;
}

void CompiledRegion::Builder::Flatten(const Node* node) {
  const int out = Flattened(node, Data(node->inputs[0]));
  SetOutputs(node, out, End(node->inputs[1]), End(node->inputs[2]));
}

void CompiledRegion::Builder::BatchNorm(const Node* node, const BatchNormOpAttrs& a) {
  const int data = Data(node->inputs[0]);
  const Value in = r_.values_[data];  // a copy: NewValue() may move the vector
  const dims d = in.md.get_dims();
  if (d.size() < 2) Fail(node, "expects data with a channel axis");
  const int64_t c = d[1];
  // Copies: a rescale hook folds them again at each forward.
  const std::vector<float> gamma = Floats(Param(node->inputs[1], mxnet::ext::kFloat32, c));
  const std::vector<float> beta = Floats(Param(node->inputs[2], mxnet::ext::kFloat32, c));
  const std::vector<float> mean = Floats(Param(node->inputs[3], mxnet::ext::kFloat32, c));
  const std::vector<float> var = Floats(Param(node->inputs[4], mxnet::ext::kFloat32, c));
  const QuantType out_type = FusedOutputType(a.bn.act);
  RangeEnd in_lo, in_hi;
  if (!a.float_input) {
    in_lo = End(node->inputs[5]);
    in_hi = End(node->inputs[6]);
  }
  const bool run_time = AtRunTime({in_lo, in_hi});
  const QuantType in_type =
      a.float_input ? QuantType::kInt8 : ToQuantType(in.md.get_data_type(), node);
  // The fold for an input range (min, max); throws what cannot be folded.
  const std::string name = node->name;
  auto fold = [=](float min, float max) {
    const ChannelParams params{gamma.data(), beta.data(), mean.data(), var.data(), c};
    FoldedScaleShift folded;
    std::string error;
    const bool ok = a.float_input ? FoldScaleShiftFloatInput(a.bn, params, out_type, &folded,
                                                             &error, a.global_avg_pool)
                                  : FoldScaleShift(a.bn, params, min, max, in_type, out_type,
                                                   &folded, &error, a.global_avg_pool);
    if (!ok) throw std::runtime_error(name + ": " + error);
    return folded;
  };
  // At build time a measured range is not known yet: any valid one makes the steps.
  const FoldedScaleShift folded = fold(run_time ? 0.f : in_lo.value, run_time ? 1.f : in_hi.value);
  const int range_slot = run_time ? NewRangeSlots() : -1;
  const RangeEnd out_lo = run_time ? Slot(range_slot) : Constant(folded.min_output);
  const RangeEnd out_hi = run_time ? Slot(range_slot + 1) : Constant(folded.max_output);

  // With a measured input range: fold again into a hand-written step at each forward.
  auto RefoldAtRunTime = [=](auto* step) {
    if (run_time) RefoldStepAtRunTime(step, fold, in_lo, in_hi, range_slot);
  };
  const dt dst_type = out_type == QuantType::kUint8 ? dt::u8 : dt::s8;
  if (a.global_avg_pool) {
    // BN+act and the mean in one pass, on planar or channels-last data.
    int src = data;
    if (!IsChannelsLast(in.md) && in.md != PlainDesc(d, in.md.get_data_type())) {
      src = InLayout(node, data, ChannelsLast(in.md));
    }
    MeanShape shape{
        d[0], c, 1,
        IsChannelsLast(r_.values_[src].md) ? MeanLayout::kChannelsLast : MeanLayout::kPlanar};
    for (size_t i = 2; i < d.size(); ++i) shape.count *= d[i];
    dims pooled(d.size(), 1);
    pooled[0] = d[0];
    pooled[1] = c;
    const int mean = NewValue(PlainDesc(pooled, dst_type));
    auto* step = new ActivationMeanStep(node->name, src, mean, folded, in.md.get_data_type(),
                                        dst_type, shape, MeanKernelIsa());
    r_.steps_.emplace_back(step);
    RefoldAtRunTime(step);
    SetOutputs(node, mean, out_lo, out_hi);
    return;
  }
  // The hand-written kernel knows the linear activations only; a curve runs
  // in oneDNN's primitive, as the op outside regions does (the same bits).
  if (!a.float_input && folded.curve == FusedActivation::Kind::kNone && IsChannelsLast(in.md) &&
      HandKernelIsa() != AffineIsa::kNone) {
    // dst = src * scale[c] + shift[c] with the hand-vectorized kernel, in NHWC.
    int64_t pixels = 1;
    for (size_t i = 0; i < d.size(); ++i) pixels *= i == 1 ? 1 : d[i];
    const dnnl::memory::desc dst_md = WithType(in.md, dst_type);
    const int dst = NewValue(dst_md);
    auto* step = new ChannelAffineStep(node->name, HandKernelIsa(), data, dst, folded,
                                       in.md.get_data_type(), dst_type, pixels);
    r_.steps_.emplace_back(step);
    RefoldAtRunTime(step);
    SetOutputs(node, dst, out_lo, out_hi);
    return;
  }
  // dst = src * scale[c] + shift[c], one binary primitive with a post-op, in
  // the input's layout (per-channel vectors are contiguous in NHWC).
  dims channel_dims(d.size(), 1);
  channel_dims[1] = c;
  const dnnl::memory::desc channel_md = PlainDesc(channel_dims, dt::f32);
  dnnl::post_ops ops;
  ops.append_binary(dnnl::algorithm::binary_add, channel_md);
  // The activation's constants depend on the output range only through its
  // levels; a run-time range keeps the primitive of the first fold (ReLU,
  // leaky ReLU and clip with a_min 0 up to its range need no constants).
  AppendActivation(folded.negative_slope, folded.clamp_lo, folded.clamp_hi, &ops);
  const int ndims = static_cast<int>(d.size());
  const int output_scale_arg = AppendCurve(folded.curve, ndims, &ops);
  dnnl::primitive_attr attr;
  attr.set_post_ops(ops);
  const dnnl::memory::desc dst_md =
      IsStrided(in.md) ? WithType(in.md, dst_type) : dnnl::memory::desc(d, dst_type, tag::any);
  dnnl::binary::primitive_desc pd(r_.engine_, dnnl::algorithm::binary_mul, in.md, channel_md,
                                  dst_md, attr);
  const int dst = NewValue(pd.dst_desc());
  PrimitiveStep* s = AddStep(node, "", dnnl::binary(pd));
  constexpr int kShift = DNNL_ARG_ATTR_MULTIPLE_POST_OP(0) | DNNL_ARG_SRC_1;
  s->Read(DNNL_ARG_SRC_0, data, in.md);
  s->Constant(DNNL_ARG_SRC_1, Owned(r_.engine_, channel_md, folded.scale.data()));
  s->Constant(kShift, Owned(r_.engine_, channel_md, folded.shift.data()));
  if (output_scale_arg != 0) {
    s->Constant(output_scale_arg, Owned(r_.engine_, ScalarDesc(ndims), &folded.output_scale));
  }
  s->Write(DNNL_ARG_DST, dst, pd.dst_desc());
  if (run_time) {
    RefoldConstantsAtRunTime(s, fold, in_lo, in_hi, range_slot, DNNL_ARG_SRC_1, kShift,
                             output_scale_arg);
  }
  SetOutputs(node, dst, out_lo, out_hi);
}

// The concat BatchNorm op (concat_batch_norm_op.cc): each input's channels
// folded with that input's range and written to their place in the output,
// one step per input, the same arithmetic as outside regions.
void CompiledRegion::Builder::ConcatBatchNorm(const Node* node, const BatchNormOpAttrs& a) {
  const int n = a.num_concat;
  std::vector<int> srcs(n);
  std::vector<RangeEnd> mins(n), maxs(n);
  std::vector<ConcatInput> parts(n);
  bool run_time = false;
  dims out_dims;
  for (int i = 0; i < n; ++i) {
    srcs[i] = Data(node->inputs[i]);
    const dnnl::memory::desc md = r_.values_[srcs[i]].md;
    const dims d = md.get_dims();
    if (d.size() < 2) Fail(node, "expects data with a channel axis");
    if (i == 0) {
      out_dims = d;
      out_dims[1] = 0;
    }
    for (size_t k = 0; k < d.size(); ++k) {
      if (k != 1 && (d.size() != out_dims.size() || d[k] != out_dims[k])) {
        Fail(node, "inputs that cannot be concatenated along the channels");
      }
    }
    out_dims[1] += d[1];
    mins[i] = End(node->inputs[n + 4 + 2 * i]);
    maxs[i] = End(node->inputs[n + 4 + 2 * i + 1]);
    run_time = run_time || AtRunTime({mins[i], maxs[i]});
    parts[i] = {d[1], 0.f, 0.f, ToQuantType(md.get_data_type(), node)};
  }
  const int64_t c = out_dims[1];
  // Copies: a rescale hook folds them again at each forward.
  const std::vector<float> gamma = Floats(Param(node->inputs[n], mxnet::ext::kFloat32, c));
  const std::vector<float> beta = Floats(Param(node->inputs[n + 1], mxnet::ext::kFloat32, c));
  const std::vector<float> mean = Floats(Param(node->inputs[n + 2], mxnet::ext::kFloat32, c));
  const std::vector<float> var = Floats(Param(node->inputs[n + 3], mxnet::ext::kFloat32, c));
  const QuantType out_type = FusedOutputType(a.bn.act);
  const dt dst_type = out_type == QuantType::kUint8 ? dt::u8 : dt::s8;
  const std::string name = node->name;
  // The folds for the ranges of `ranges` (any valid ones at build time when
  // they are measured at run time); throws what cannot be folded.
  auto fold = [=](const Ranges& ranges, bool built) {
    std::vector<ConcatInput> now = parts;
    for (int i = 0; i < n; ++i) {
      now[i].min_data = built && run_time ? 0.f : mins[i].Get(ranges);
      now[i].max_data = built && run_time ? 1.f : maxs[i].Get(ranges);
    }
    const ChannelParams params{gamma.data(), beta.data(), mean.data(), var.data(), c};
    std::vector<FoldedScaleShift> folded;
    std::string error;
    if (!FoldConcatScaleShift(a.bn, params, now, out_type, &folded, &error, a.global_avg_pool)) {
      throw std::runtime_error(name + ": " + error);
    }
    return folded;
  };
  const std::vector<FoldedScaleShift> folded = fold(r_.ranges_, true);
  const int range_slot = run_time ? NewRangeSlots() : -1;
  const RangeEnd out_lo = run_time ? Slot(range_slot) : Constant(folded[0].min_output);
  const RangeEnd out_hi = run_time ? Slot(range_slot + 1) : Constant(folded[0].max_output);
  const int ndims = static_cast<int>(out_dims.size());
  const dnnl::memory::desc plain_out = PlainDesc(out_dims, dst_type);
  // With a measured input range: fold again at each forward, into every
  // part's hand-written step (the mean or the affine map).
  auto RefoldAtRunTime = [=](const auto& steps) {
    if (!run_time) return;
    steps[0]->set_rescale([=](Ranges& ranges) {
      std::vector<FoldedScaleShift> f = fold(ranges, false);
      ranges[range_slot] = f[0].min_output;
      ranges[range_slot + 1] = f[0].max_output;
      for (int i = 0; i < n; ++i) steps[i]->SetScaleShift(std::move(f[i]));
    });
  };

  if (a.avg_pool_in) {
    ConcatRefold refold;
    if (run_time) {
      refold = [=](Ranges& ranges) {
        std::vector<FoldedScaleShift> f = fold(ranges, false);
        ranges[range_slot] = f[0].min_output;
        ranges[range_slot + 1] = f[0].max_output;
        return f;
      };
    }
    const int dst = ConcatAvgPoolBatchNorm(node, a, srcs, folded, out_type, refold);
    SetOutputs(node, dst, out_lo, out_hi);
    return;
  }
  if (a.global_avg_pool) {
    // Each part's BN+act means (as the single-input op's step), then one
    // concatenation of the (N, c_i, 1, 1) results.
    std::vector<ActivationMeanStep*> steps;
    std::vector<int> means;
    std::vector<dnnl::memory::desc> mean_mds;
    for (int i = 0; i < n; ++i) {
      const dnnl::memory::desc md = r_.values_[srcs[i]].md;
      const dims d = md.get_dims();
      int src = srcs[i];
      if (!IsChannelsLast(md) && md != PlainDesc(d, md.get_data_type())) {
        src = InLayout(node, src, ChannelsLast(md));
      }
      MeanShape shape{
          d[0], d[1], 1,
          IsChannelsLast(r_.values_[src].md) ? MeanLayout::kChannelsLast : MeanLayout::kPlanar};
      for (size_t k = 2; k < d.size(); ++k) shape.count *= d[k];
      dims pooled(d.size(), 1);
      pooled[0] = d[0];
      pooled[1] = d[1];
      mean_mds.push_back(PlainDesc(pooled, dst_type));
      means.push_back(NewValue(mean_mds.back()));
      auto* step =
          new ActivationMeanStep(name + "/" + std::to_string(i), src, means.back(), folded[i],
                                 md.get_data_type(), dst_type, shape, MeanKernelIsa());
      r_.steps_.emplace_back(step);
      steps.push_back(step);
    }
    dims pooled_out(out_dims.size(), 1);
    pooled_out[0] = out_dims[0];
    pooled_out[1] = c;
    dnnl::concat::primitive_desc pd(r_.engine_, PlainDesc(pooled_out, dst_type), 1, mean_mds);
    const int dst = NewValue(pd.dst_desc());
    PrimitiveStep* s = AddStep(node, "/concat", dnnl::concat(pd));
    for (int i = 0; i < n; ++i) s->Read(DNNL_ARG_MULTIPLE_SRC + i, means[i], mean_mds[i]);
    s->Write(DNNL_ARG_DST, dst, pd.dst_desc());
    RefoldAtRunTime(steps);
    SetOutputs(node, dst, out_lo, out_hi);
    return;
  }

  if (folded[0].curve == FusedActivation::Kind::kNone && HandKernelIsa() != AffineIsa::kNone) {
    // The hand-vectorized kernel on channels-last data, each input into its
    // channels of the output rows.
    const int dst = NewValue(ChannelsLast(plain_out));
    std::vector<ChannelAffineStep*> steps;
    int64_t begin = 0;
    for (int i = 0; i < n; ++i) {
      const dnnl::memory::desc md = r_.values_[srcs[i]].md;
      const int src = IsChannelsLast(md) ? srcs[i] : InLayout(node, srcs[i], ChannelsLast(md));
      int64_t pixels = 1;
      for (size_t k = 0; k < out_dims.size(); ++k) pixels *= k == 1 ? 1 : out_dims[k];
      auto* step = new ChannelAffineStep(name + "/" + std::to_string(i), HandKernelIsa(), src, dst,
                                         folded[i], md.get_data_type(), dst_type, pixels, c, begin);
      r_.steps_.emplace_back(step);
      steps.push_back(step);
      begin += parts[i].channels;
    }
    RefoldAtRunTime(steps);
    SetOutputs(node, dst, out_lo, out_hi);
    return;
  }
  // oneDNN's binary primitive per input (as the op outside regions), each
  // writing a channel slice of the output.
  const dnnl::memory::desc dst_md =
      IsChannelsLast(r_.values_[srcs[0]].md) ? ChannelsLast(plain_out) : plain_out;
  const int dst = NewValue(dst_md);
  constexpr int kShift = DNNL_ARG_ATTR_MULTIPLE_POST_OP(0) | DNNL_ARG_SRC_1;
  std::vector<PrimitiveStep*> steps;
  std::vector<int> output_scale_args;
  int64_t begin = 0;
  for (int i = 0; i < n; ++i) {
    const dnnl::memory::desc in_md = r_.values_[srcs[i]].md;
    const FoldedScaleShift& f = folded[i];
    dims channel_dims(ndims, 1);
    channel_dims[1] = parts[i].channels;
    const dnnl::memory::desc channel_md = PlainDesc(channel_dims, dt::f32);
    dims part_dims = out_dims, offsets(ndims, 0);
    part_dims[1] = parts[i].channels;
    offsets[1] = begin;
    const dnnl::memory::desc part_md = dst_md.submemory_desc(part_dims, offsets);
    dnnl::post_ops ops;
    ops.append_binary(dnnl::algorithm::binary_add, channel_md);
    AppendActivation(f.negative_slope, f.clamp_lo, f.clamp_hi, &ops);
    const int output_scale_arg = AppendCurve(f.curve, ndims, &ops);
    dnnl::primitive_attr attr;
    attr.set_post_ops(ops);
    dnnl::binary::primitive_desc pd(r_.engine_, dnnl::algorithm::binary_mul, in_md, channel_md,
                                    part_md, attr);
    PrimitiveStep* s = AddStep(node, "/" + std::to_string(i), dnnl::binary(pd));
    s->Read(DNNL_ARG_SRC_0, srcs[i], in_md);
    s->Constant(DNNL_ARG_SRC_1, Owned(r_.engine_, channel_md, f.scale.data()));
    s->Constant(kShift, Owned(r_.engine_, channel_md, f.shift.data()));
    if (output_scale_arg != 0) {
      s->Constant(output_scale_arg, Owned(r_.engine_, ScalarDesc(ndims), &f.output_scale));
    }
    s->Write(DNNL_ARG_DST, dst, part_md);
    steps.push_back(s);
    output_scale_args.push_back(output_scale_arg);
    begin += parts[i].channels;
  }
  if (run_time) {
    steps[0]->set_rescale([=](Ranges& ranges) {
      const std::vector<FoldedScaleShift> f = fold(ranges, false);
      ranges[range_slot] = f[0].min_output;
      ranges[range_slot + 1] = f[0].max_output;
      for (int i = 0; i < n; ++i) {
        std::copy(f[i].scale.begin(), f[i].scale.end(), steps[i]->ConstantFloats(DNNL_ARG_SRC_1));
        std::copy(f[i].shift.begin(), f[i].shift.end(), steps[i]->ConstantFloats(kShift));
        if (output_scale_args[i] != 0) {
          *steps[i]->ConstantFloats(output_scale_args[i]) = f[i].output_scale;
        }
      }
    });
  }
  SetOutputs(node, dst, out_lo, out_hi);
}

CompiledRegion::Builder::AddScales CompiledRegion::Builder::ScalesOfAdd(const AddAttrs& a,
                                                                        QuantType lq, QuantType rq,
                                                                        dt out_type, float lhs_abs,
                                                                        float rhs_abs) {
  AddScales s;
  if (a.calibrated) {
    const float out_range =
        QuantizedRange(out_type == dt::u8 ? QuantType::kUint8 : QuantType::kInt8);
    const float out_scale = out_range / std::max(std::fabs(a.min_calib), std::fabs(a.max_calib));
    s.lhs = out_scale / (QuantizedRange(lq) / lhs_abs);
    s.rhs = out_scale / (QuantizedRange(rq) / rhs_abs);
    s.min = a.min_calib;
    s.max = a.max_calib;
  } else {
    const float out_range = 2147483648.f;
    s.lhs = (lhs_abs * out_range) / ((lhs_abs + rhs_abs) * QuantizedRange(lq));
    s.rhs = (rhs_abs * out_range) / ((lhs_abs + rhs_abs) * QuantizedRange(rq));
    s.max = lhs_abs + rhs_abs;
    s.min = -s.max;
  }
  return s;
}

// MXNet's quantized elemwise_add (mkldnn_quantized_elemwise_add.cc): each
// operand scaled to the output's levels, summed in float, rounded once; a
// uint8 operand beside an int8 one is first rescaled into int8 on its own.
void CompiledRegion::Builder::Add(const Node* node, const AddAttrs& a) {
  int lhs = Data(node->inputs[0]), rhs = Data(node->inputs[1]);
  const dt lhs_type = r_.values_[lhs].md.get_data_type();
  const dt rhs_type = r_.values_[rhs].md.get_data_type();
  const QuantType lq = ToQuantType(lhs_type, node), rq = ToQuantType(rhs_type, node);
  if (r_.values_[lhs].md.get_dims() != r_.values_[rhs].md.get_dims()) {
    Fail(node, "operands of different shapes");
  }
  std::vector<RangeEnd> ends;
  for (int i = 2; i < 6; ++i) ends.push_back(End(node->inputs[i]));
  const bool run_time = AtRunTime({ends[0], ends[1], ends[2], ends[3]});
  const dt out_type = !a.calibrated ? dt::s32 : lhs_type == rhs_type ? lhs_type : dt::s8;
  auto scales = [=](const Ranges& r) {
    const float lhs_abs = std::max(std::fabs(ends[0].Get(r)), std::fabs(ends[1].Get(r)));
    const float rhs_abs = std::max(std::fabs(ends[2].Get(r)), std::fabs(ends[3].Get(r)));
    return ScalesOfAdd(a, lq, rq, out_type, lhs_abs, rhs_abs);
  };
  const AddScales built = scales(r_.ranges_);  // the final ones unless run_time
  // Both operands in one strided layout (the left one's).
  const dnnl::memory::desc layout = StridedOrPlain(r_.values_[lhs].md);
  lhs = InLayout(node, lhs, layout);
  rhs = InLayout(node, rhs, WithType(layout, rhs_type));
  dt a_type = lhs_type, b_type = rhs_type;
  // -1: no operand is rescaled on its own; 0: the left one; 1: the right one.
  int converted = -1;
  PrimitiveStep* convert = nullptr;
  if (lhs_type != rhs_type) {
    if (rhs_type == dt::u8) {
      rhs = ScaledCopy(node, rhs, WithType(layout, dt::s8), built.rhs, &convert);
      b_type = dt::s8;
      converted = 1;
    } else {
      lhs = ScaledCopy(node, lhs, WithType(layout, dt::s8), built.lhs, &convert);
      a_type = dt::s8;
      converted = 0;
    }
  }
  const int dst = NewValue(WithType(layout, out_type));
  auto* add = new ScaledAddStep(node->name, lhs, rhs, dst, converted == 0 ? 1.f : built.lhs,
                                converted == 1 ? 1.f : built.rhs, a_type, b_type, out_type,
                                static_cast<int64_t>(layout.get_size()));
  r_.steps_.emplace_back(add);
  if (!run_time) {
    SetOutputs(node, dst, built.min, built.max);
    return;
  }
  const int slot = NewRangeSlots();
  // One hook on the first of the steps sets the scales of both.
  Step* first = convert != nullptr ? static_cast<Step*>(convert) : add;
  first->set_rescale([=](Ranges& ranges) {
    const AddScales s = scales(ranges);
    if (convert != nullptr) {
      *convert->ConstantFloats(DNNL_ARG_ATTR_SCALES | DNNL_ARG_SRC) =
          converted == 0 ? s.lhs : s.rhs;
    }
    add->SetScales(converted == 0 ? 1.f : s.lhs, converted == 1 ? 1.f : s.rhs);
    ranges[slot] = s.min;
    ranges[slot + 1] = s.max;
  });
  SetOutputs(node, dst, Slot(slot), Slot(slot + 1));
}

// MXNet's quantized concat: output range (min(0, mins), max(0, maxs)),
// int8 if any input is; each input rescaled to it unless its scale is already
// the output's (exact float comparison), then a plain concatenation.  With
// ranges measured at run time every input is rescaled (a scale of exactly 1
// copies the values unchanged).
void CompiledRegion::Builder::Concat(const Node* node, const ConcatAttrs& c) {
  const int n = c.num_args;
  std::vector<int> srcs(n);
  std::vector<RangeEnd> mins(n), maxs(n);
  std::vector<QuantType> types(n);
  bool any_signed = false, run_time = false;
  for (int i = 0; i < n; ++i) {
    srcs[i] = Data(node->inputs[i]);
    mins[i] = End(node->inputs[n + 2 * i]);
    maxs[i] = End(node->inputs[n + 2 * i + 1]);
    run_time = run_time || AtRunTime({mins[i], maxs[i]});
    types[i] = ToQuantType(r_.values_[srcs[i]].md.get_data_type(), node);
    any_signed = any_signed || types[i] == QuantType::kInt8;
  }
  const QuantType out_q = any_signed ? QuantType::kInt8 : QuantType::kUint8;
  const dt out_type = any_signed ? dt::s8 : dt::u8;
  // The output range, and the scale of each input (into `scales`).
  auto rule = [=](const Ranges& r, std::vector<float>* scales) {
    float out_min = 0.f, out_max = 0.f;
    for (int i = 0; i < n; ++i) {
      out_min = std::min(out_min, mins[i].Get(r));
      out_max = std::max(out_max, maxs[i].Get(r));
    }
    const float out_scale =
        QuantizedRange(out_q) / std::max(std::fabs(out_min), std::fabs(out_max));
    scales->resize(n);
    for (int i = 0; i < n; ++i) {
      const float scale =
          QuantizedRange(types[i]) / std::max(std::fabs(mins[i].Get(r)), std::fabs(maxs[i].Get(r)));
      (*scales)[i] = scale == out_scale ? 1.f : out_scale / scale;
    }
    return std::make_pair(out_min, out_max);
  };
  std::vector<float> scales;
  const std::pair<float, float> built = rule(r_.ranges_, &scales);
  std::vector<PrimitiveStep*> copies(n, nullptr);
  std::vector<dnnl::memory::desc> mds;
  for (int i = 0; i < n; ++i) {
    const Value v = r_.values_[srcs[i]];
    if (run_time || scales[i] != 1.f || v.md.get_data_type() != out_type) {
      srcs[i] = ScaledCopy(node, srcs[i], WithType(StridedOrPlain(v.md), out_type), scales[i],
                           &copies[i]);
    }
    mds.push_back(r_.values_[srcs[i]].md);
  }
  dims out_dims = mds[0].get_dims();
  if (c.dim >= static_cast<int>(out_dims.size())) Fail(node, "concat dimension out of range");
  out_dims[c.dim] = 0;
  for (const auto& md : mds) out_dims[c.dim] += md.get_dims()[c.dim];
  dnnl::concat::primitive_desc pd(r_.engine_, dnnl::memory::desc(out_dims, out_type, tag::any),
                                  c.dim, mds);
  const int dst = NewValue(pd.dst_desc());
  PrimitiveStep* s = AddStep(node, "", dnnl::concat(pd));
  for (int i = 0; i < n; ++i) s->Read(DNNL_ARG_MULTIPLE_SRC + i, srcs[i], mds[i]);
  s->Write(DNNL_ARG_DST, dst, pd.dst_desc());
  if (!run_time) {
    SetOutputs(node, dst, built.first, built.second);
    return;
  }
  const int slot = NewRangeSlots();
  copies[0]->set_rescale([=](Ranges& ranges) {
    std::vector<float> now;
    const std::pair<float, float> range = rule(ranges, &now);
    for (int i = 0; i < n; ++i)
      *copies[i]->ConstantFloats(DNNL_ARG_ATTR_SCALES | DNNL_ARG_SRC) = now[i];
    ranges[slot] = range.first;
    ranges[slot + 1] = range.second;
  });
  SetOutputs(node, dst, Slot(slot), Slot(slot + 1));
}

}  // namespace region
}  // namespace bnq
