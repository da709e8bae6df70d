#include "region_compiler.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <map>
#include <stdexcept>
#include <utility>

#include "../channel_mean_kernel.h"
#include "../scale_shift_folding.h"
#include "channel_affine_kernel.h"
#include "quantized_conv_scales.h"
#include "region_node_attrs.h"

namespace bnq {
namespace region {

using mxnet::ext::Graph;
using mxnet::ext::MXTensor;
using mxnet::ext::NodeEntry;
using dt = dnnl::memory::data_type;
using tag = dnnl::memory::format_tag;
using dims = dnnl::memory::dims;

namespace {

[[noreturn]] void Fail(const Node* node, const std::string& message) {
  throw std::runtime_error((node ? node->name + ": " : std::string()) + message);
}

dt ToDnnlType(int mx_type, const Node* node) {
  switch (mx_type) {
    case mxnet::ext::kFloat32:
      return dt::f32;
    case mxnet::ext::kUint8:
      return dt::u8;
    case mxnet::ext::kInt8:
      return dt::s8;
    case mxnet::ext::kInt32:
      return dt::s32;
    default:
      Fail(node, "unsupported data type " + std::to_string(mx_type));
  }
}

tag PlainTag(size_t ndims) {
  switch (ndims) {
    case 1:
      return tag::a;
    case 2:
      return tag::ab;
    case 3:
      return tag::abc;
    case 4:
      return tag::abcd;
    case 5:
      return tag::abcde;
    default:
      throw std::runtime_error("tensors of " + std::to_string(ndims) +
                               " dimensions are not supported in regions");
  }
}

dnnl::memory::desc PlainDesc(const dims& d, dt type) { return {d, type, PlainTag(d.size())}; }

// A strided layout without blocks (plain, NHWC, ...): can be viewed with another type.
bool IsStrided(const dnnl::memory::desc& md) {
  return md.get_format_kind() == dnnl::memory::format_kind::blocked && md.get_inner_nblks() == 0;
}

// Dense channels-last: (n, spatial..., c) with c contiguous.
bool IsChannelsLast(const dnnl::memory::desc& md) {
  if (!IsStrided(md)) return false;
  const dims d = md.get_dims(), s = md.get_strides();
  int64_t expected = 1;
  if (s[1] != expected) return false;
  expected *= d[1];
  for (size_t i = d.size() - 1; i >= 2; --i) {
    if (s[i] != expected) return false;
    expected *= d[i];
  }
  return s[0] == expected;
}

dnnl::memory::desc ChannelsLast(const dnnl::memory::desc& md) {
  const dims d = md.get_dims();
  dims strides(d.size());
  int64_t stride = 1;
  strides[1] = stride;
  stride *= d[1];
  for (size_t i = d.size() - 1; i >= 2; --i) {
    strides[i] = stride;
    stride *= d[i];
  }
  strides[0] = stride;
  return {d, md.get_data_type(), strides};
}

dnnl::memory::desc WithType(const dnnl::memory::desc& md, dt type) {
  return {md.get_dims(), type, md.get_strides()};
}

// The hand-vectorized AVX-512 kernels run where the CPU has them and oneDNN
// may use AVX-512 too (ONEDNN_MAX_CPU_ISA limits both, so tests of older
// instruction sets run oneDNN's primitives everywhere).
bool HandKernelsAllowed() {
  static const bool allowed = [] {
    const int isa = static_cast<int>(dnnl::get_effective_cpu_isa());
    return ChannelAffineKernelAvailable() &&
           (isa & dnnl_cpu_isa_avx512_core) == dnnl_cpu_isa_avx512_core;
  }();
  return allowed;
}

QuantType ToQuantType(dt type, const Node* node) {
  if (type == dt::s8) return QuantType::kInt8;
  if (type == dt::u8) return QuantType::kUint8;
  Fail(node, "expects int8 or uint8 data");
}

}  // namespace

// 64-bit FNV-1a of a tensor's bytes, 8 at a time.
uint64_t CompiledRegion::Digest(const MXTensor& t) {
  const size_t bytes = static_cast<size_t>(t.size()) *
                       (t.dtype == mxnet::ext::kInt8 || t.dtype == mxnet::ext::kUint8 ? 1 : 4);
  const auto* p = static_cast<const unsigned char*>(t.data_ptr);
  uint64_t h = 1469598103934665603ull;
  size_t i = 0;
  for (; i + 8 <= bytes; i += 8) {
    uint64_t word;
    std::memcpy(&word, p + i, 8);
    h = (h ^ word) * 1099511628211ull;
  }
  for (; i < bytes; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

namespace {

// A oneDNN memory holding a copy of `bytes` (owned by oneDNN).
dnnl::memory Owned(const dnnl::engine& engine, const dnnl::memory::desc& md, const void* bytes) {
  dnnl::memory m(md, engine);
  std::memcpy(m.get_data_handle(), bytes, md.get_size());
  return m;
}

}  // namespace

// The state of one build: which value or range each node output became.
class CompiledRegion::Builder {
 public:
  Builder(CompiledRegion* region, const Graph& graph, const std::vector<MXTensor>& inputs)
      : r_(*region), graph_(graph), inputs_(inputs) {
    for (size_t i = 0; i < graph.inputs.size(); ++i)
      input_index_[graph.inputs[i]] = static_cast<int>(i);
    for (size_t i = 0; i < graph.size(); ++i) {
      for (const NodeEntry& e : graph.getNode(i)->inputs) ++uses_[{e.node, e.entry}];
    }
    for (const NodeEntry& e : graph.outputs) ++uses_[{e.node, e.entry}];
  }

  void Build(const std::vector<MXTensor>& outputs) {
    r_.input_values_.assign(inputs_.size(), -1);
    std::vector<Node*> order = graph_.topological_sort();  // consumers first
    for (auto it = order.rbegin(); it != order.rend(); ++it) {
      Node* node = *it;
      if (node->op == "null") continue;
      RegionNode parsed;
      std::string why;
      if (!ParseRegionNode(node, &parsed, &why)) Fail(node, why);
      switch (parsed.kind) {
        case OpKind::kConv:
          Conv(node, parsed.conv);
          break;
        case OpKind::kFullyConnected:
          FullyConnected(node, parsed.fc);
          break;
        case OpKind::kPooling:
          Pooling(node, parsed.pool);
          break;
        case OpKind::kRelu:
          Relu(node);
          break;
        case OpKind::kFlatten:
          Flatten(node);
          break;
        case OpKind::kBatchNorm:
          BatchNorm(node, parsed.bn);
          break;
        case OpKind::kQuantize:
          Quantize(node, parsed.quantize);
          break;
        case OpKind::kRequantize:
          Requantize(node, parsed.quantize);
          break;
        case OpKind::kDequantize:
          Dequantize(node);
          break;
        case OpKind::kAdd:
          Add(node, parsed.add);
          break;
        case OpKind::kConcat:
          Concat(node, parsed.concat);
          break;
      }
    }
    Outputs(outputs);
  }

 private:
  using Key = std::pair<const Node*, int>;

  const MXTensor& InputTensor(const NodeEntry& e, InputUse use) {
    auto it = input_index_.find(e.node);
    if (it == input_index_.end()) Fail(e.node, "expected a region input");
    InputRecord& rec = r_.input_records_[it->second];
    if (rec.use != InputUse::kUnused && rec.use != use) {
      Fail(e.node, "a region input used both as data and as a parameter");
    }
    rec.use = use;
    return inputs_[it->second];
  }

  // The tensor value of entry `e`: a region input or an earlier node's output.
  int Data(const NodeEntry& e) {
    ++reads_[{e.node, e.entry}];
    auto found = values_.find({e.node, e.entry});
    if (found != values_.end()) return found->second;
    auto in = input_index_.find(e.node);
    if (in == input_index_.end())
      Fail(e.node, "output " + std::to_string(e.entry) + " has no value");
    const MXTensor& t = InputTensor(e, InputUse::kData);
    Value v;
    v.kind = ValueKind::kInput;
    v.md = PlainDesc(dims(t.shape.begin(), t.shape.end()), ToDnnlType(t.dtype, e.node));
    const int index = Add(v);
    r_.input_values_[in->second] = index;
    values_[{e.node, e.entry}] = index;
    return index;
  }

  // A parameter (weights, BatchNorm statistics) as float32 or int8.
  const MXTensor& Param(const NodeEntry& e, int dtype, int64_t elements) {
    const MXTensor& t = InputTensor(e, InputUse::kParam);
    InputRecord& rec = r_.input_records_[input_index_[e.node]];
    rec.version = t.verID;
    rec.digest = Digest(t);
    if (t.dtype != dtype || t.size() != elements) {
      Fail(e.node, "parameter of " + std::to_string(t.size()) + " elements of type " +
                       std::to_string(t.dtype) + ", expected " + std::to_string(elements) +
                       " of type " + std::to_string(dtype));
    }
    return t;
  }

  // A range end (min or max) of quantized data: a region input (a constant
  // the region is built for) or a node's output 1 or 2.
  RangeEnd End(const NodeEntry& e) {
    auto found = scalars_.find({e.node, e.entry});
    if (found != scalars_.end()) return found->second;
    const MXTensor& t = InputTensor(e, InputUse::kScalar);
    if (t.dtype != mxnet::ext::kFloat32 || t.size() != 1)
      Fail(e.node, "a range must be one float32");
    const float v = *static_cast<const float*>(t.data_ptr);
    r_.input_records_[input_index_[e.node]].scalar = v;
    return Constant(v);
  }

  // A range end that must be known when the region is built.
  float Scalar(const Node* consumer, const NodeEntry& e) {
    const RangeEnd end = End(e);
    if (end.at_run_time()) {
      Fail(consumer,
           "needs a constant input range, and " + e.node->name + " measures its range at run time");
    }
    return end.value;
  }

  int Add(const Value& v) {
    r_.values_.push_back(v);
    return static_cast<int>(r_.values_.size()) - 1;
  }

  bool HasAliases(int value) const {
    for (const Value& v : r_.values_) {
      if (v.alias_of == value) return true;
    }
    return false;
  }

  int NewValue(const dnnl::memory::desc& md) {
    Value v;
    v.md = md;
    return Add(v);
  }

  static RangeEnd Constant(float v) {
    RangeEnd e;
    e.value = v;
    return e;
  }

  // Two new run-time range slots (min, max); returns the first.
  int NewRangeSlots() {
    r_.ranges_.resize(r_.ranges_.size() + 2);
    return static_cast<int>(r_.ranges_.size()) - 2;
  }

  static RangeEnd Slot(int slot) {
    RangeEnd e;
    e.slot = slot;
    return e;
  }

  static bool AtRunTime(std::initializer_list<RangeEnd> ends) {
    for (const RangeEnd& e : ends) {
      if (e.at_run_time()) return true;
    }
    return false;
  }

  void SetOutputs(const Node* node, int value, RangeEnd min, RangeEnd max) {
    values_[{node, 0}] = value;
    scalars_[{node, 1}] = min;
    scalars_[{node, 2}] = max;
  }

  void SetOutputs(const Node* node, int value, float min, float max) {
    SetOutputs(node, value, Constant(min), Constant(max));
  }

  PrimitiveStep* AddStep(const Node* node, const std::string& what, dnnl::primitive p) {
    r_.steps_.emplace_back(new PrimitiveStep(node->name + what, std::move(p)));
    return static_cast<PrimitiveStep*>(r_.steps_.back().get());
  }

  // `value` in layout `md` (same dims and type): itself, or a reordered copy.
  int InLayout(const Node* node, int value, const dnnl::memory::desc& md) {
    const Value v = r_.values_[value];  // a copy: NewValue() may move the vector
    if (v.md == md) return value;
    const int copy = NewValue(md);
    dnnl::reorder::primitive_desc pd(r_.engine_, v.md, r_.engine_, md);
    PrimitiveStep* s = AddStep(node, "/reorder", dnnl::reorder(pd));
    s->Read(DNNL_ARG_FROM, value, v.md);
    s->Write(DNNL_ARG_TO, copy, md);
    return copy;
  }

  // Quantized weights (plain layout `plain`) reordered once into the
  // primitive's layout `md`, in memory oneDNN owns; the reorder also computes
  // the compensation that int8 data needs.
  dnnl::memory Reordered(const dnnl::memory::desc& plain, const void* data,
                         const dnnl::memory::desc& md) {
    dnnl::memory src(plain, r_.engine_, const_cast<void*>(data));
    dnnl::memory dst(md, r_.engine_);
    dnnl::reorder(src, dst).execute(r_.stream_, src, dst);
    r_.stream_.wait();
    return dst;
  }

  std::vector<float> Floats(const MXTensor& t) {
    const float* p = static_cast<const float*>(t.data_ptr);
    return std::vector<float>(p, p + t.size());
  }

  void Conv(const Node* node, const ConvAttrs& a) {
    if (static_cast<int>(node->inputs.size()) != a.num_inputs())
      Fail(node, "unexpected input count");
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
    if (!QuantizeConv(out, oc, per_channel, weights.data(), bias.empty() ? nullptr : bias.data(),
                      &q, &error)) {
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
    const dnnl::memory::desc w_plain(w_dims, dt::s8, g == 1 ? tag::oihw : tag::goihw);
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
      const float sum_scale = q.output_scale / QuantizeScale(ToQuantType(operand_type, node),
                                                             sum_lo.value, sum_hi.value);
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
    dnnl::convolution_forward::primitive_desc pd(r_.engine_, dnnl::prop_kind::forward_inference,
                                                 dnnl::algorithm::convolution_direct, src_any,
                                                 dnnl::memory::desc(w_dims, dt::s8, tag::any),
                                                 bias_md, dst_md, strides, dilates, pad, pad, attr);

    dnnl::memory weights_mem = Reordered(w_plain, q.weights.data(), pd.weights_desc());
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
        add->SetScales(1.f, o.output_scale / QuantizeScale(operand_type, sum_lo.Get(ranges),
                                                           sum_hi.Get(ranges)));
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

  void Pooling(const Node* node, PoolingAttrs a) {
    const int data = Data(node->inputs[0]);
    const Value in = r_.values_[data];  // a copy: NewValue() may move the vector
    const dims d = in.md.get_dims();
    if (d.size() != 4) Fail(node, "expects 4-D data");
    if (a.global) a.kernel = {d[2], d[3]};
    dims out_dims{d[0], d[1], 0, 0}, pad_r(2);
    for (int i = 0; i < 2; ++i) {
      const int64_t span = d[2 + i] + 2 * a.pad[i] - a.kernel[i];
      if (span < 0) Fail(node, "the pooling kernel is larger than the padded input");
      const int64_t size =
          (a.full_convention ? (span + a.stride[i] - 1) / a.stride[i] : span / a.stride[i]) + 1;
      out_dims[2 + i] = size;
      pad_r[i] = (size - 1) * a.stride[i] + a.kernel[i] - d[2 + i] - a.pad[i];
    }
    const dnnl::algorithm alg = a.max ? dnnl::algorithm::pooling_max
                                : a.count_include_pad
                                    ? dnnl::algorithm::pooling_avg_include_padding
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

  void Relu(const Node* node) {
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
  int Flattened(const Node* node, int value) {
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

  void Flatten(const Node* node) {
    const int out = Flattened(node, Data(node->inputs[0]));
    SetOutputs(node, out, End(node->inputs[1]), End(node->inputs[2]));
  }

  void FullyConnected(const Node* node, const FullyConnectedAttrs& a) {
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

  void BatchNorm(const Node* node, const BatchNormOpAttrs& a) {
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
    const QuantType out_type = a.relu ? QuantType::kUint8 : QuantType::kInt8;
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
      const bool ok =
          a.float_input
              ? FoldScaleShiftFloatInput(a.bn, params, out_type, a.relu, &folded, &error)
              : FoldScaleShift(a.bn, params, min, max, in_type, out_type, a.relu, &folded, &error);
      if (!ok) throw std::runtime_error(name + ": " + error);
      return folded;
    };
    // At build time a measured range is not known yet: any valid one makes the steps.
    const FoldedScaleShift folded =
        fold(run_time ? 0.f : in_lo.value, run_time ? 1.f : in_hi.value);
    const int range_slot = run_time ? NewRangeSlots() : -1;
    const RangeEnd out_lo = run_time ? Slot(range_slot) : Constant(folded.min_output);
    const RangeEnd out_hi = run_time ? Slot(range_slot + 1) : Constant(folded.max_output);

    const dt dst_type = a.relu ? dt::u8 : dt::s8;
    if (!a.float_input && IsChannelsLast(in.md) && HandKernelsAllowed()) {
      // dst = src * scale[c] + shift[c] with the hand-vectorized kernel, in NHWC.
      int64_t pixels = 1;
      for (size_t i = 0; i < d.size(); ++i) pixels *= i == 1 ? 1 : d[i];
      const dnnl::memory::desc dst_md = WithType(in.md, dst_type);
      const int dst = NewValue(dst_md);
      auto* step = new ChannelAffineStep(node->name, data, dst, folded.scale, folded.shift,
                                         in.md.get_data_type(), dst_type, pixels);
      r_.steps_.emplace_back(step);
      if (run_time) {
        step->set_rescale([=](Ranges& ranges) {
          FoldedScaleShift f = fold(in_lo.Get(ranges), in_hi.Get(ranges));
          ranges[range_slot] = f.min_output;
          ranges[range_slot + 1] = f.max_output;
          step->SetScaleShift(std::move(f.scale), std::move(f.shift));
        });
      }
      FinishBatchNorm(node, a, d, dst, dst_md, out_lo, out_hi);
      return;
    }
    // dst = src * scale[c] + shift[c], one binary primitive with a post-op, in
    // the input's layout (per-channel vectors are contiguous in NHWC).
    dims channel_dims(d.size(), 1);
    channel_dims[1] = c;
    const dnnl::memory::desc channel_md = PlainDesc(channel_dims, dt::f32);
    dnnl::post_ops ops;
    ops.append_binary(dnnl::algorithm::binary_add, channel_md);
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
    s->Write(DNNL_ARG_DST, dst, pd.dst_desc());
    if (run_time) {
      s->set_rescale([=](Ranges& ranges) {
        const FoldedScaleShift f = fold(in_lo.Get(ranges), in_hi.Get(ranges));
        ranges[range_slot] = f.min_output;
        ranges[range_slot + 1] = f.max_output;
        std::copy(f.scale.begin(), f.scale.end(), s->ConstantFloats(DNNL_ARG_SRC_1));
        std::copy(f.shift.begin(), f.shift.end(), s->ConstantFloats(kShift));
      });
    }
    FinishBatchNorm(node, a, d, dst, pd.dst_desc(), out_lo, out_hi);
  }

  // The BatchNorm's outputs, or with global average pooling fused, the mean step after it.
  void FinishBatchNorm(const Node* node, const BatchNormOpAttrs& a, const dims& d, int dst,
                       const dnnl::memory::desc& dst_md, RangeEnd out_lo, RangeEnd out_hi) {
    const int64_t c = d[1];
    if (!a.global_avg_pool) {
      SetOutputs(node, dst, out_lo, out_hi);
      return;
    }
    // The mean of each channel, summed exactly over the channels-last BN+ReLU output.
    int64_t count = 1;
    for (size_t i = 2; i < d.size(); ++i) count *= d[i];
    if (count > ChannelMeanKernel::kMaxInner) {
      Fail(node, "pools " + std::to_string(count) +
                     " values per channel, more than an int32 "
                     "sum holds exactly");
    }
    int src = dst;
    if (!IsChannelsLast(dst_md)) src = InLayout(node, dst, ChannelsLast(dst_md));
    dims pooled(d.size(), 1);
    pooled[0] = d[0];
    pooled[1] = c;
    const int mean_value = NewValue(PlainDesc(pooled, dt::u8));
    r_.steps_.emplace_back(
        new ChannelMeanStep(node->name + "/mean", src, mean_value, d[0], c, count));
    SetOutputs(node, mean_value, out_lo, out_hi);
  }

  // A scaled copy whose scale and output range `rule` computes from the
  // ranges: once here when every range it reads is constant, else before
  // each forward (into two new range slots).
  using RangeRule = std::function<Requantized(const Ranges&)>;
  void RangedCopy(const Node* node, int src, const dnnl::memory::desc& dst_md, bool run_time,
                  RangeRule rule) {
    if (!run_time) {
      const Requantized r = rule(r_.ranges_);
      SetOutputs(node, ScaledCopy(node, src, dst_md, r.scale), r.min, r.max);
      return;
    }
    const int slot = NewRangeSlots();
    PrimitiveStep* step = nullptr;
    const int dst = ScaledCopy(node, src, dst_md, 1.f, &step);
    step->set_rescale([=](Ranges& ranges) {
      const Requantized r = rule(ranges);
      *step->ConstantFloats(DNNL_ARG_ATTR_SCALES | DNNL_ARG_SRC) = r.scale;
      ranges[slot] = r.min;
      ranges[slot + 1] = r.max;
    });
    SetOutputs(node, dst, Slot(slot), Slot(slot + 1));
  }

  // MXNet's quantize_v2 of float32 data: q = saturate(round(x * scale)),
  // scale = (127.5 | 255.5) / max(|min|, |max|) of the calibrated range or
  // (uncalibrated) of the data's own minimum and maximum, measured at each
  // forward.  One reorder, into NHWC for 4-D data (what int8 convolutions read).
  void Quantize(const Node* node, const QuantizeAttrs& a) {
    const int data = Data(node->inputs[0]);
    const Value in = r_.values_[data];
    if (in.md.get_data_type() != dt::f32) Fail(node, "regions quantize float32 data only");
    const QuantType type = a.uint8_output() ? QuantType::kUint8 : QuantType::kInt8;
    if (a.calibrated && !(std::max(std::fabs(a.min_calib), std::fabs(a.max_calib)) > 0.f)) {
      Fail(node, "the calibrated range is empty");
    }
    const dims d = in.md.get_dims();
    const dt out_type = type == QuantType::kUint8 ? dt::u8 : dt::s8;
    const dnnl::memory::desc out_md =
        d.size() == 4 ? dnnl::memory::desc(d, out_type, tag::nhwc) : PlainDesc(d, out_type);
    if (a.calibrated) {
      RangedCopy(node, data, out_md, false,
                 [=](const Ranges&) { return QuantizeFloat(type, a.min_calib, a.max_calib); });
      return;
    }
    const int measured = MeasureRange(node, data);
    RangedCopy(node, data, out_md, true,
               [=](const Ranges& r) { return QuantizeFloat(type, r[measured], r[measured + 1]); });
  }

  // A step that writes the minimum and maximum of `value` (float32 or int32,
  // strided) into two new range slots; returns the first.
  int MeasureRange(const Node* node, int value) {
    const dnnl::memory::desc md = r_.values_[value].md;
    if (!IsStrided(md)) Fail(node, "measures the range of a blocked tensor");
    const int slot = NewRangeSlots();
    const int64_t elements = static_cast<int64_t>(md.get_size() / sizeof(float));
    r_.steps_.emplace_back(
        new MinMaxStep(node->name + "/measure", value, md.get_data_type(), elements, slot));
    return slot;
  }

  // MXNet's requantize of int32 data (requantize-inl.h): to the calibrated
  // range, or to the range of the data's own extremes, measured at each forward.
  void Requantize(const Node* node, const QuantizeAttrs& a) {
    const int raw = Data(node->inputs[0]);
    const Value in = r_.values_[raw];
    if (in.md.get_data_type() != dt::s32) Fail(node, "requantizes int32 data only");
    const int data = InLayout(node, raw, StridedOrPlain(in.md));
    const RangeEnd in_lo = End(node->inputs[1]), in_hi = End(node->inputs[2]);
    const QuantType type = a.uint8_output() ? QuantType::kUint8 : QuantType::kInt8;
    const dnnl::memory::desc out_md =
        WithType(r_.values_[data].md, type == QuantType::kUint8 ? dt::u8 : dt::s8);
    const int measured = a.calibrated ? -1 : MeasureRange(node, data);
    RangedCopy(node, data, out_md, measured >= 0 || AtRunTime({in_lo, in_hi}),
               [=](const Ranges& r) {
                 return RequantizeInt32(type, in_lo.Get(r), in_hi.Get(r), a.calibrated, a.min_calib,
                                        a.max_calib, measured >= 0 ? r[measured] : 0.f,
                                        measured >= 0 ? r[measured + 1] : 0.f);
               });
  }

  // MXNet's dequantize: x = q * (max(|min|, |max|) / (127.5 | 255.5)), float32 NCHW.
  void Dequantize(const Node* node) {
    const int data = Data(node->inputs[0]);
    const Value in = r_.values_[data];
    const RangeEnd lo = End(node->inputs[1]), hi = End(node->inputs[2]);
    const float levels = QuantizedRange(ToQuantType(in.md.get_data_type(), node));
    auto scale_of = [levels](float min, float max) {
      return std::max(std::fabs(min), std::fabs(max)) / levels;
    };
    const dnnl::memory::desc out_md = PlainDesc(in.md.get_dims(), dt::f32);
    if (!AtRunTime({lo, hi})) {
      values_[{node, 0}] = ScaledCopy(node, data, out_md, scale_of(lo.value, hi.value));
      return;
    }
    PrimitiveStep* step = nullptr;
    values_[{node, 0}] = ScaledCopy(node, data, out_md, 1.f, &step);
    step->set_rescale([=](Ranges& ranges) {
      *step->ConstantFloats(DNNL_ARG_ATTR_SCALES | DNNL_ARG_SRC) =
          scale_of(lo.Get(ranges), hi.Get(ranges));
    });
  }

  // A new value: saturate(round(fl(src * scale))) in layout and type `dst_md`,
  // one reorder with a source scale (oneDNN rounds to nearest even).  `step`,
  // if given, receives the reorder step (whose scale a rescale hook may set).
  int ScaledCopy(const Node* node, int src, const dnnl::memory::desc& dst_md, float scale,
                 PrimitiveStep** step = nullptr) {
    const dnnl::memory::desc src_md = r_.values_[src].md;
    dnnl::primitive_attr attr;
    attr.set_scales_mask(DNNL_ARG_SRC, 0);
    dnnl::reorder::primitive_desc pd(r_.engine_, src_md, r_.engine_, dst_md, attr);
    const int dst = NewValue(dst_md);
    PrimitiveStep* s = AddStep(node, "/scale", dnnl::reorder(pd));
    s->Read(DNNL_ARG_FROM, src, src_md);
    s->Constant(DNNL_ARG_ATTR_SCALES | DNNL_ARG_SRC,
                Owned(r_.engine_, dnnl::memory::desc({1}, dt::f32, tag::a), &scale));
    s->Write(DNNL_ARG_TO, dst, dst_md);
    if (step != nullptr) *step = s;
    return dst;
  }

  // `md` if strided (plain, NHWC, ...), else the plain layout of its dims.
  static dnnl::memory::desc StridedOrPlain(const dnnl::memory::desc& md) {
    return IsStrided(md) ? md : PlainDesc(md.get_dims(), md.get_data_type());
  }

  // The scales of MXNet's quantized elemwise_add for operand ranges (max-abs):
  // each operand to the output's levels; the output range.
  struct AddScales {
    float lhs, rhs, min, max;
  };
  static AddScales ScalesOfAdd(const AddAttrs& a, QuantType lq, QuantType rq, dt out_type,
                               float lhs_abs, float rhs_abs) {
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
  void Add(const Node* node, const AddAttrs& a) {
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
  void Concat(const Node* node, const ConcatAttrs& c) {
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
        const float scale = QuantizedRange(types[i]) /
                            std::max(std::fabs(mins[i].Get(r)), std::fabs(maxs[i].Get(r)));
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

  void Outputs(const std::vector<MXTensor>& outputs) {
    if (outputs.size() != graph_.outputs.size()) Fail(nullptr, "region output count mismatch");
    for (size_t i = 0; i < graph_.outputs.size(); ++i) {
      const NodeEntry& e = graph_.outputs[i];
      const MXTensor& t = outputs[i];
      Value out;
      out.kind = ValueKind::kOutput;
      out.md = PlainDesc(dims(t.shape.begin(), t.shape.end()), ToDnnlType(t.dtype, e.node));
      const int index = Add(out);
      r_.output_values_.push_back(index);
      auto scalar = scalars_.find({e.node, e.entry});
      if (scalar != scalars_.end()) {
        if (t.dtype != mxnet::ext::kFloat32 || t.size() != 1)
          Fail(e.node, "a range output must be one float32");
        r_.steps_.emplace_back(new ScalarStep(e.node->name + "/range", index, scalar->second));
        continue;
      }
      const int value = Data(e);
      const dnnl::memory::desc& src = r_.values_[value].md;
      if (src.get_dims() != out.md.get_dims() || src.get_data_type() != out.md.get_data_type()) {
        Fail(e.node, "the region computes a different shape or type than MXNet expects");
      }
      dnnl::reorder::primitive_desc pd(r_.engine_, src, r_.engine_, out.md);
      PrimitiveStep* s = AddStep(e.node, "/output", dnnl::reorder(pd));
      s->Read(DNNL_ARG_FROM, value, src);
      s->Write(DNNL_ARG_TO, index, out.md);
    }
  }

  CompiledRegion& r_;
  const Graph& graph_;
  const std::vector<MXTensor>& inputs_;
  std::map<const Node*, int> input_index_;
  std::map<Key, int> values_;        // tensor outputs
  std::map<Key, RangeEnd> scalars_;  // range outputs (min, max)
  std::map<Key, int> uses_;          // consumers (and graph outputs) of each node output
  std::map<Key, int> reads_;         // of them, those built so far

  // True when the node being built is the last reader of `e`'s tensor.
  bool LastRead(const NodeEntry& e) {
    return reads_[{e.node, e.entry}] == uses_[{e.node, e.entry}];
  }
};

CompiledRegion::CompiledRegion(const Graph& graph, const std::vector<MXTensor>& inputs,
                               const std::vector<MXTensor>& outputs)
    : engine_(dnnl::engine::kind::cpu, 0), stream_(engine_) {
  if (inputs.size() != graph.inputs.size()) {
    throw std::runtime_error("the region has " + std::to_string(graph.inputs.size()) +
                             " inputs, got " + std::to_string(inputs.size()));
  }
  for (const MXTensor& t : inputs) {
    InputRecord rec;
    rec.shape = t.shape;
    rec.dtype = t.dtype;
    input_records_.push_back(rec);
  }
  for (const MXTensor& t : outputs) {
    output_shapes_.push_back(t.shape);
    output_dtypes_.push_back(t.dtype);
  }
  Builder(this, graph, inputs).Build(outputs);
  plan_.Assign(steps_, &values_);
  for (auto& step : steps_) {
    try {
      step->Bind(engine_, values_);
    } catch (const dnnl::error& e) {
      throw std::runtime_error(step->name() + ": oneDNN error: " + e.what());
    }
  }
}

std::string CompiledRegion::Mismatch(const std::vector<MXTensor>& inputs,
                                     const std::vector<MXTensor>& outputs) {
  if (inputs.size() != input_records_.size() || outputs.size() != output_shapes_.size()) {
    return "the number of inputs or outputs";
  }
  for (size_t i = 0; i < inputs.size(); ++i) {
    InputRecord& rec = input_records_[i];
    const MXTensor& t = inputs[i];
    const std::string which = "input " + std::to_string(i);
    if (t.shape != rec.shape || t.dtype != rec.dtype) return "the shape or type of " + which;
    if (rec.use == InputUse::kParam && t.verID != rec.version) {
      // MXNet bumps the version of every auxiliary state (BatchNorm
      // statistics) at each forward of an op that may write them: a new
      // version with the same bytes is no change.
      if (Digest(t) != rec.digest) return "the values of parameter input " + std::to_string(i);
      rec.version = t.verID;
    }
    if (rec.use == InputUse::kScalar && *static_cast<const float*>(t.data_ptr) != rec.scalar) {
      return "the range value " + which;
    }
  }
  for (size_t i = 0; i < outputs.size(); ++i) {
    if (outputs[i].shape != output_shapes_[i] || outputs[i].dtype != output_dtypes_[i]) {
      return "the shape or type of output " + std::to_string(i);
    }
  }
  return "";
}

void CompiledRegion::Run(const std::vector<MXTensor>& inputs,
                         const std::vector<MXTensor>& outputs) {
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (input_values_[i] >= 0) values_[input_values_[i]].data = inputs[i].data_ptr;
  }
  for (size_t i = 0; i < outputs.size(); ++i) values_[output_values_[i]].data = outputs[i].data_ptr;
  for (auto& step : steps_) {
    try {
      step->Rescale(ranges_);
      step->Execute(stream_, values_, ranges_);
    } catch (const dnnl::error& e) {
      throw std::runtime_error(step->name() + ": oneDNN error: " + e.what());
    }
  }
  stream_.wait();
}

}  // namespace region
}  // namespace bnq
