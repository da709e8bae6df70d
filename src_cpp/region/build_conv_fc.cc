// The region steps of MXNet's fused quantized convolution and fully
// connected ops (the scale arithmetic is quantized_conv_scales).
#include <algorithm>
#include <string>

#include "region_builder.h"

namespace bnq {
namespace region {
namespace {

// oneDNN 3.2 ranks its brgemm convolutions first from AVX-512 VNNI up
// (below, its direct kernels).  Without AMX and with fewer than 64 input
// channels (less than one 64-byte vector of the u8 x s8 reduction), its
// direct jit_int8 kernels of the same instruction set, the ones MXNet's
// oneDNN 2.4 runs there, are 10-45% faster (AVX-512 VNNI on Zen 4: the demo
// model's 16- and 32-channel convolutions, mobilenet's 32-channel depthwise
// one); from 64 channels the two are within 3% of each other and oneDNN's
// choice stands.  Both sum the same int32 products and apply the same float
// scales (tests: parity with MXNet).
template <typename MakeDesc>
dnnl::convolution_forward::primitive_desc FasterImplementation(MakeDesc make, int64_t ic) {
  dnnl::convolution_forward::primitive_desc first = make();
  const std::string name = first.impl_info_str();
  const size_t colon = name.find(':');
  if (ic >= 64 || name.rfind("brg", 0) != 0 || colon == std::string::npos ||
      name.find("amx") != std::string::npos) {
    return first;
  }
  const std::string isa = name.substr(colon);
  dnnl::convolution_forward::primitive_desc other = make();
  while (other.next_impl()) {
    const std::string candidate = other.impl_info_str();
    if (candidate.rfind("jit_int8", 0) == 0 && candidate.size() >= isa.size() &&
        candidate.compare(candidate.size() - isa.size(), isa.size(), isa) == 0) {
      return other;
    }
  }
  return first;
}

}  // namespace

void CompiledRegion::Builder::Conv(const Node* node, const ConvAttrs& a) {
  if (static_cast<int>(node->inputs.size()) != a.num_inputs()) Fail(node, "unexpected input count");
  const int data = Data(node->inputs[0]);
  const Value in = r_.values_[data];  // a copy: NewValue() may move the vector
  const dims in_dims = in.md.get_dims();
  if (in_dims.size() != 4) Fail(node, "expects 4-D data");
  const int64_t n = in_dims[0], ic = in_dims[1], oc = a.num_filter, g = a.num_group;
  if (ic % g != 0) Fail(node, "input channels are not a multiple of num_group");
  const int64_t per_channel = (ic / g) * a.kernel[0] * a.kernel[1];

  std::vector<float> weights =
      Floats(Param(node->inputs[1], mxnet::ext::kFloat32, oc * per_channel));
  std::vector<float> bias;
  int next = 2;
  if (!a.no_bias) bias = Floats(Param(node->inputs[next++], mxnet::ext::kFloat32, oc));
  if (a.with_bn) {
    const MXTensor& gamma = Param(node->inputs[next], mxnet::ext::kFloat32, oc);
    const MXTensor& beta = Param(node->inputs[next + 1], mxnet::ext::kFloat32, oc);
    const MXTensor& mean = Param(node->inputs[next + 2], mxnet::ext::kFloat32, oc);
    const MXTensor& var = Param(node->inputs[next + 3], mxnet::ext::kFloat32, oc);
    FoldBatchNormIntoConv(
        {static_cast<const float*>(gamma.data_ptr), static_cast<const float*>(beta.data_ptr),
         static_cast<const float*>(mean.data_ptr), static_cast<const float*>(var.data_ptr),
         a.bn.eps, a.bn.fix_gamma},
        oc, per_channel, &weights, &bias);
  }
  const int dmin = a.data_min_input(), smin = dmin + 2;
  const QuantType data_type = ToQuantType(in.md.get_data_type(), node);
  const RangeEnd data_lo = End(node->inputs[dmin]), data_hi = End(node->inputs[dmin + 1]);
  RangeEnd sum_lo, sum_hi;
  if (a.with_sum) {
    sum_lo = End(node->inputs[smin]);
    sum_hi = End(node->inputs[smin + 1]);
  }
  const bool run_time = AtRunTime({data_lo, data_hi, sum_lo, sum_hi});
  if (a.calibrated && run_time) {
    // MXNet re-quantizes the weights whenever such a range changes.
    Fail(node, "a calibrated convolution needs constant input ranges");
  }
  // The weights of an uncalibrated convolution do not depend on the data
  // range: a placeholder stands in for one measured at run time.
  ConvOutput out{data_type,
                 run_time ? 0.f : data_lo.value,
                 run_time ? 1.f : data_hi.value,
                 a.calibrated,
                 a.min_calib,
                 a.max_calib,
                 a.uint8_output()};
  if (out.data_min < 0 && out.data_type == QuantType::kUint8) {
    Fail(node, "uint8 data with a negative range");
  }
  QuantizedConv q;
  std::string error;
  if (!QuantizeConv(out, oc, per_channel, weights.data(), bias.empty() ? nullptr : bias.data(), &q,
                    &error)) {
    Fail(node, error);
  }

  dims out_dims{n, oc, 0, 0}, strides, dilates, pad;
  for (int i = 0; i < 2; ++i) {
    const int64_t extent = a.dilate[i] * (a.kernel[i] - 1) + 1;
    const int64_t size = (in_dims[2 + i] + 2 * a.pad[i] - extent) / a.stride[i] + 1;
    if (size <= 0) Fail(node, "the kernel is larger than the padded input");
    out_dims[2 + i] = size;
    strides.push_back(a.stride[i]);
    dilates.push_back(a.dilate[i] - 1);
    pad.push_back(a.pad[i]);
  }
  const dt out_type = !a.calibrated ? dt::s32 : a.uint8_output() ? dt::u8 : dt::s8;
  const dims w_dims = g == 1 ? dims{oc, ic, a.kernel[0], a.kernel[1]}
                             : dims{g, oc / g, ic / g, a.kernel[0], a.kernel[1]};
  const dnnl::memory::desc bias_md({oc}, dt::f32, tag::a);

  dnnl::post_ops ops;
  int sum = -1;
  switch (a.act) {
    case FusedAct::kNone:
      break;
    case FusedAct::kRelu:
      ops.append_eltwise(dnnl::algorithm::eltwise_relu, 0.f, 0.f);
      break;
    case FusedAct::kLeakyRelu:
      ops.append_eltwise(dnnl::algorithm::eltwise_relu, a.act_alpha, 0.f);
      break;
    case FusedAct::kBoundedRelu:
      // MXNet drops it without a sum: the uint8 output saturates (calibrated
      // on the clipped values); with a sum it is not fused.
      break;
    case FusedAct::kGelu:
      // Of the real values (out / output scale), back in output units after.
      ops.append_eltwise(dnnl::algorithm::eltwise_linear, 1.f / q.output_scale, 0.f);
      ops.append_eltwise(dnnl::algorithm::eltwise_gelu_erf, 0.f, 0.f);
      ops.append_eltwise(dnnl::algorithm::eltwise_linear, q.output_scale, 0.f);
      break;
  }
  // Calibrated, the sum is a post-op.  Uncalibrated (int32 output) its scale
  // s = output scale / operand scale follows run-time ranges, and a oneDNN
  // sum scale is fixed when the primitive is made (and compiled into its
  // kernel): the sum is a step of its own after the convolution,
  // round(fma(operand, s, y)) as oneDNN's post-op computes it for MXNet (y,
  // the int32 convolution, is exact in float below 2^24).
  const bool sum_post_op = a.with_sum && a.calibrated;
  if (a.with_sum) sum = Data(node->inputs[a.sum_input()]);
  if (sum_post_op) {
    const dt operand_type = r_.values_[sum].md.get_data_type();
    const float sum_scale =
        q.output_scale / QuantizeScale(ToQuantType(operand_type, node), sum_lo.value, sum_hi.value);
    // The operand is read in its own type: a uint8 operand stays unsigned
    // (MXNet 1.9.1 reads it as the int8 output type, see the README).
    ops.append_sum(sum_scale, 0, operand_type);
    if (a.with_postsum_act) ops.append_eltwise(dnnl::algorithm::eltwise_relu, 0.f, 0.f);
  }
  dnnl::primitive_attr attr;
  attr.set_scales_mask(DNNL_ARG_WEIGHTS, a.calibrated && g == 1 ? 1 : a.calibrated ? 3 : 0);
  attr.set_post_ops(ops);

  const dnnl::memory::desc src_any(in_dims, in.md.get_data_type(), tag::any);
  // With a sum the output must be viewable in the operand's type, and an
  // int32 output is read by requantize: NHWC.
  const dnnl::memory::desc dst_md(out_dims, out_type,
                                  a.with_sum || !a.calibrated ? tag::nhwc : tag::any);
  const dnnl::convolution_forward::primitive_desc pd = FasterImplementation(
      [&] {
        return dnnl::convolution_forward::primitive_desc(
            r_.engine_, dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct,
            src_any, dnnl::memory::desc(w_dims, dt::s8, tag::any), bias_md, dst_md, strides,
            dilates, pad, pad, attr);
      },
      ic);

  // The unrounded products w * scale, rounded by oneDNN's reorder: on CPUs
  // without VNNI it stores the weights halved (u8 x s8 pairs must fit 16 bits),
  // and MXNet's oneDNN rounds w * scale / 2 once; our int8 weights rounded
  // again would differ.
  dnnl::memory weights_mem =
      Reordered(dnnl::memory::desc(w_dims, dt::f32, g == 1 ? tag::oihw : tag::goihw),
                q.scaled_weights.data(), pd.weights_desc());
  std::vector<float> bias_f32(oc, 0.f);
  for (int64_t c = 0; c < oc; ++c) {
    // One requantize scale uncalibrated (where the rescale hook sets the bias again).
    const float requantize = q.requantize[q.requantize.size() == 1 ? 0 : c];
    if (!q.bias.empty()) bias_f32[c] = static_cast<float>(q.bias[c]) * requantize;
  }
  const int src = InLayout(node, data, pd.src_desc());
  const int dst = NewValue(pd.dst_desc());
  if (sum_post_op) {
    const Value operand = r_.values_[sum];
    const dnnl::memory::desc view = WithType(pd.dst_desc(), operand.md.get_data_type());
    if (operand.kind == ValueKind::kIntermediate && operand.md == view && sum != data &&
        sum != src && LastRead(node->inputs[a.sum_input()]) && !HasAliases(sum)) {
      // Nothing reads the operand later: add into its own buffer.
      r_.values_[dst].alias_of = sum;
    } else {
      // The operand into the output buffer (in the output's layout), then
      // the convolution adds to it.
      dnnl::reorder::primitive_desc rpd(r_.engine_, operand.md, r_.engine_, view);
      PrimitiveStep* copy = AddStep(node, "/sum_operand", dnnl::reorder(rpd));
      copy->Read(DNNL_ARG_FROM, sum, operand.md);
      copy->Write(DNNL_ARG_TO, dst, view);
    }
  }
  PrimitiveStep* s = AddStep(node, "", dnnl::convolution_forward(pd));
  s->Read(DNNL_ARG_SRC, src, pd.src_desc());
  s->Constant(DNNL_ARG_WEIGHTS, weights_mem);
  s->Constant(DNNL_ARG_BIAS, Owned(r_.engine_, bias_md, bias_f32.data()));
  s->Constant(
      DNNL_ARG_ATTR_SCALES | DNNL_ARG_WEIGHTS,
      Owned(r_.engine_,
            dnnl::memory::desc({static_cast<int64_t>(q.requantize.size())}, dt::f32, tag::a),
            q.requantize.data()));
  if (sum_post_op) s->Read(DNNL_ARG_DST, dst, pd.dst_desc());
  s->Write(DNNL_ARG_DST, dst, pd.dst_desc());
  if (a.calibrated) {
    SetOutputs(node, dst, q.min_output, q.max_output);
    return;
  }
  int result = dst;  // the convolution's, or with a sum the sum step's
  ScaledAddStep* add = nullptr;
  QuantType operand_type = QuantType::kInt8;
  if (a.with_sum) {
    const dt operand_dt = r_.values_[sum].md.get_data_type();
    operand_type = ToQuantType(operand_dt, node);
    const int operand = InLayout(node, sum, WithType(pd.dst_desc(), operand_dt));
    result = NewValue(pd.dst_desc());
    add = new ScaledAddStep(node->name + "/sum", dst, operand, result, 1.f, operand_dt,
                            static_cast<int64_t>(pd.dst_desc().get_size() / sizeof(int32_t)),
                            ScaledAddStep::SumPostOp{a.with_postsum_act});
    r_.steps_.emplace_back(add);
  }
  // The int32 bias, the sum scale and the output range follow the input ranges.
  const int out_slot = run_time ? NewRangeSlots() : -1;
  const float weight_scale = q.weight_scale, weight_max_abs = q.weight_max_abs;
  s->set_rescale([=](Ranges& ranges) {
    Int32ConvOutput o;
    Int32ConvOutputFor(data_type, data_lo.Get(ranges), data_hi.Get(ranges), weight_scale,
                       weight_max_abs, bias.empty() ? nullptr : bias.data(), oc, &o);
    float* b = s->ConstantFloats(DNNL_ARG_BIAS);
    for (int64_t c = 0; c < oc; ++c) b[c] = o.bias.empty() ? 0.f : static_cast<float>(o.bias[c]);
    if (add != nullptr) {
      add->SetScales(1.f, o.output_scale /
                              QuantizeScale(operand_type, sum_lo.Get(ranges), sum_hi.Get(ranges)));
    }
    if (out_slot >= 0) {
      ranges[out_slot] = o.min_output;
      ranges[out_slot + 1] = o.max_output;
    }
  });
  if (run_time) {
    SetOutputs(node, result, Slot(out_slot), Slot(out_slot + 1));
  } else {
    SetOutputs(node, result, q.min_output, q.max_output);
  }
}

void CompiledRegion::Builder::FullyConnected(const Node* node, const FullyConnectedAttrs& a) {
  const int base = a.no_bias ? 2 : 3;
  const int inputs = a.channel_wise ? base + 2 : base * 3;
  if (static_cast<int>(node->inputs.size()) != inputs) Fail(node, "unexpected input count");
  const int raw = Data(node->inputs[0]);
  if (!a.flatten && r_.values_[raw].md.get_dims().size() != 2) {
    Fail(node, "flatten=False on data that is not 2-D");
  }
  const int data = Flattened(node, raw);
  const Value in = r_.values_[data];  // a copy: NewValue() may move the vector
  const int64_t n = in.md.get_dims()[0], k = in.md.get_dims()[1], oc = a.num_hidden;
  const QuantType data_type = ToQuantType(in.md.get_data_type(), node);
  auto scalar = [&](int i) { return Scalar(node, node->inputs[base + i]); };
  const FullyConnectedOutput out{!a.float_output, a.relu, a.min_calib, a.max_calib};
  // Per output channel: out = act((acc + bias) * output_scale) * post_scale.
  std::vector<int8_t> weights;
  std::vector<int32_t> bias;
  std::vector<float> output_scales;
  float post_scale = 1.f;
  std::string error;
  if (a.channel_wise) {
    const MXTensor& w = Param(node->inputs[1], mxnet::ext::kFloat32, oc * k);
    const MXTensor* b = a.no_bias ? nullptr : &Param(node->inputs[2], mxnet::ext::kFloat32, oc);
    ChannelWiseFullyConnected q;
    if (!QuantizeFullyConnectedChannelWise(
            data_type, scalar(0), scalar(1), static_cast<const float*>(w.data_ptr), oc, k,
            b ? static_cast<const float*>(b->data_ptr) : nullptr, out, &q, &error)) {
      Fail(node, error);
    }
    weights = std::move(q.weights);
    bias = std::move(q.bias);
    output_scales = std::move(q.output_scales);
    post_scale = q.post_scale;
  } else {
    const MXTensor& w = Param(node->inputs[1], mxnet::ext::kInt8, oc * k);
    const MXTensor* b = a.no_bias ? nullptr : &Param(node->inputs[2], mxnet::ext::kInt8, oc);
    QuantizedFullyConnected q;
    if (!QuantizeFullyConnected(data_type, scalar(0), scalar(1),
                                static_cast<const int8_t*>(w.data_ptr), oc * k, scalar(2),
                                scalar(3), b ? static_cast<const int8_t*>(b->data_ptr) : nullptr,
                                oc, b ? scalar(4) : 0.f, b ? scalar(5) : 0.f, out, &q, &error)) {
      Fail(node, error);
    }
    weights = std::move(q.weights);
    bias = std::move(q.bias);
    output_scales.assign(1, q.output_scale);
    post_scale = q.post_scale;
  }
  dnnl::primitive_attr attr;
  attr.set_scales_mask(DNNL_ARG_WEIGHTS, output_scales.size() == 1 ? 0 : 1);
  if (a.relu) {
    dnnl::post_ops ops;
    ops.append_eltwise(dnnl::algorithm::eltwise_relu, 0.f, 0.f);
    ops.append_eltwise(dnnl::algorithm::eltwise_linear, post_scale, 0.f);
    attr.set_post_ops(ops);
  }
  const dnnl::memory::desc bias_md({oc}, dt::f32, tag::a);
  const dt dst_type = a.float_output ? dt::f32 : a.relu ? dt::u8 : dt::s8;
  const dnnl::memory::desc dst_md({n, oc}, dst_type, tag::ab);
  dnnl::inner_product_forward::primitive_desc pd(
      r_.engine_, dnnl::prop_kind::forward_inference, in.md,
      dnnl::memory::desc({oc, k}, dt::s8, tag::any), bias_md, dst_md, attr);
  dnnl::memory weights_mem =
      Reordered(dnnl::memory::desc({oc, k}, dt::s8, tag::ab), weights.data(), pd.weights_desc());
  std::vector<float> bias_f32(oc, 0.f);
  for (size_t c = 0; c < bias.size(); ++c) {
    bias_f32[c] = static_cast<float>(bias[c]) * output_scales[output_scales.size() == 1 ? 0 : c];
  }
  const int dst = NewValue(pd.dst_desc());
  PrimitiveStep* s = AddStep(node, "", dnnl::inner_product_forward(pd));
  s->Read(DNNL_ARG_SRC, data, in.md);
  s->Constant(DNNL_ARG_WEIGHTS, weights_mem);
  s->Constant(DNNL_ARG_BIAS, Owned(r_.engine_, bias_md, bias_f32.data()));
  s->Constant(
      DNNL_ARG_ATTR_SCALES | DNNL_ARG_WEIGHTS,
      Owned(r_.engine_,
            dnnl::memory::desc({static_cast<int64_t>(output_scales.size())}, dt::f32, tag::a),
            output_scales.data()));
  s->Write(DNNL_ARG_DST, dst, pd.dst_desc());
  if (a.float_output) {
    values_[{node, 0}] = dst;
  } else {
    SetOutputs(node, dst, a.min_calib, a.max_calib);
  }
}

}  // namespace region
}  // namespace bnq
