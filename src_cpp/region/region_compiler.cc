#include "region_compiler.h"

#include <algorithm>
#include <cmath>
#include <cstring>
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
    case mxnet::ext::kFloat32: return dt::f32;
    case mxnet::ext::kUint8: return dt::u8;
    case mxnet::ext::kInt8: return dt::s8;
    case mxnet::ext::kInt32: return dt::s32;
    default: Fail(node, "unsupported data type " + std::to_string(mx_type));
  }
}

tag PlainTag(size_t ndims) {
  switch (ndims) {
    case 1: return tag::a;
    case 2: return tag::ab;
    case 3: return tag::abc;
    case 4: return tag::abcd;
    case 5: return tag::abcde;
    default: throw std::runtime_error("tensors of " + std::to_string(ndims) +
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
    for (size_t i = 0; i < graph.inputs.size(); ++i) input_index_[graph.inputs[i]] = static_cast<int>(i);
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
        case OpKind::kConv: Conv(node, parsed.conv); break;
        case OpKind::kFullyConnected: FullyConnected(node, parsed.fc); break;
        case OpKind::kPooling: Pooling(node, parsed.pool); break;
        case OpKind::kRelu: Relu(node); break;
        case OpKind::kFlatten: Flatten(node); break;
        case OpKind::kBatchNorm: BatchNorm(node, parsed.bn); break;
        case OpKind::kQuantize: Quantize(node, parsed.quantize); break;
        case OpKind::kDequantize: Dequantize(node); break;
        case OpKind::kAdd: Add(node, parsed.add); break;
        case OpKind::kConcat: Concat(node, parsed.concat); break;
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
    if (in == input_index_.end()) Fail(e.node, "output " + std::to_string(e.entry) + " has no value");
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

  // A range (min or max) of quantized data: a region input or a node's output 1 or 2.
  float Scalar(const NodeEntry& e) {
    auto found = scalars_.find({e.node, e.entry});
    if (found != scalars_.end()) return found->second;
    const MXTensor& t = InputTensor(e, InputUse::kScalar);
    if (t.dtype != mxnet::ext::kFloat32 || t.size() != 1) Fail(e.node, "a range must be one float32");
    const float v = *static_cast<const float*>(t.data_ptr);
    r_.input_records_[input_index_[e.node]].scalar = v;
    return v;
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

  int NewValue(const dnnl::memory::desc& md, float min, float max) {
    Value v;
    v.md = md;
    v.min = min;
    v.max = max;
    return Add(v);
  }

  void SetOutputs(const Node* node, int value, float min, float max) {
    values_[{node, 0}] = value;
    scalars_[{node, 1}] = min;
    scalars_[{node, 2}] = max;
  }

  PrimitiveStep* AddStep(const Node* node, const std::string& what, dnnl::primitive p) {
    r_.steps_.emplace_back(new PrimitiveStep(node->name + what, std::move(p)));
    return static_cast<PrimitiveStep*>(r_.steps_.back().get());
  }

  // `value` in layout `md` (same dims and type): itself, or a reordered copy.
  int InLayout(const Node* node, int value, const dnnl::memory::desc& md) {
    const Value v = r_.values_[value];  // a copy: NewValue() may move the vector
    if (v.md == md) return value;
    const int copy = NewValue(md, v.min, v.max);
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
    if (static_cast<int>(node->inputs.size()) != a.num_inputs()) Fail(node, "unexpected input count");
    const int data = Data(node->inputs[0]);
    const Value in = r_.values_[data];  // a copy: NewValue() may move the vector
    const dims in_dims = in.md.get_dims();
    if (in_dims.size() != 4) Fail(node, "expects 4-D data");
    const int64_t n = in_dims[0], ic = in_dims[1], oc = a.num_filter, g = a.num_group;
    if (ic % g != 0) Fail(node, "input channels are not a multiple of num_group");
    const int64_t per_channel = (ic / g) * a.kernel[0] * a.kernel[1];

    std::vector<float> weights = Floats(Param(node->inputs[1], mxnet::ext::kFloat32, oc * per_channel));
    std::vector<float> bias;
    int next = 2;
    if (!a.no_bias) bias = Floats(Param(node->inputs[next++], mxnet::ext::kFloat32, oc));
    if (a.with_bn) {
      const MXTensor& gamma = Param(node->inputs[next], mxnet::ext::kFloat32, oc);
      const MXTensor& beta = Param(node->inputs[next + 1], mxnet::ext::kFloat32, oc);
      const MXTensor& mean = Param(node->inputs[next + 2], mxnet::ext::kFloat32, oc);
      const MXTensor& var = Param(node->inputs[next + 3], mxnet::ext::kFloat32, oc);
      FoldBatchNormIntoConv({static_cast<const float*>(gamma.data_ptr),
                             static_cast<const float*>(beta.data_ptr),
                             static_cast<const float*>(mean.data_ptr),
                             static_cast<const float*>(var.data_ptr), a.bn.eps, a.bn.fix_gamma},
                            oc, per_channel, &weights, &bias);
    }
    const int dmin = a.data_min_input();
    ConvOutput out{ToQuantType(in.md.get_data_type(), node), Scalar(node->inputs[dmin]),
                   Scalar(node->inputs[dmin + 1]), a.calibrated, a.min_calib, a.max_calib,
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
    const dt out_type = a.uint8_output() ? dt::u8 : dt::s8;
    const dims w_dims = g == 1 ? dims{oc, ic, a.kernel[0], a.kernel[1]}
                               : dims{g, oc / g, ic / g, a.kernel[0], a.kernel[1]};
    const dnnl::memory::desc w_plain(w_dims, dt::s8, g == 1 ? tag::oihw : tag::goihw);
    const dnnl::memory::desc bias_md({oc}, dt::f32, tag::a);

    dnnl::post_ops ops;
    int sum = -1;
    float sum_scale = 1.f;
    switch (a.act) {
      case FusedAct::kNone: break;
      case FusedAct::kRelu: ops.append_eltwise(dnnl::algorithm::eltwise_relu, 0.f, 0.f); break;
      case FusedAct::kLeakyRelu:
        ops.append_eltwise(dnnl::algorithm::eltwise_relu, a.act_alpha, 0.f);
        break;
      case FusedAct::kBoundedRelu:
        // MXNet drops it without a sum: the uint8 output saturates (calibrated
        // on the clipped values); with a sum it is not fused.
        break;
    }
    if (a.with_sum) {
      sum = Data(node->inputs[a.sum_input()]);
      const int smin = a.data_min_input() + 2;
      const QuantType sum_type = ToQuantType(r_.values_[sum].md.get_data_type(), node);
      sum_scale = q.output_scale /
                  QuantizeScale(sum_type, Scalar(node->inputs[smin]), Scalar(node->inputs[smin + 1]));
      // The operand is read in its own type: a uint8 operand stays unsigned
      // (MXNet 1.9.1 reads it as the int8 output type, see the README).
      ops.append_sum(sum_scale, 0, r_.values_[sum].md.get_data_type());
    }
    if (a.with_postsum_act) ops.append_eltwise(dnnl::algorithm::eltwise_relu, 0.f, 0.f);
    dnnl::primitive_attr attr;
    attr.set_scales_mask(DNNL_ARG_WEIGHTS, g == 1 ? 1 : 3);
    attr.set_post_ops(ops);

    const dnnl::memory::desc src_any(in_dims, in.md.get_data_type(), tag::any);
    // With a sum the output must be viewable in the operand's type: NHWC.
    const dnnl::memory::desc dst_md(out_dims, out_type, a.with_sum ? tag::nhwc : tag::any);
    dnnl::convolution_forward::primitive_desc pd(
        r_.engine_, dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct,
        src_any, dnnl::memory::desc(w_dims, dt::s8, tag::any), bias_md, dst_md, strides,
        dilates, pad, pad, attr);

    dnnl::memory weights_mem = Reordered(w_plain, q.weights.data(), pd.weights_desc());
    std::vector<float> bias_f32(oc, 0.f);
    for (int64_t c = 0; c < oc; ++c) {
      if (!q.bias.empty()) bias_f32[c] = static_cast<float>(q.bias[c]) * q.requantize[c];
    }
    const int src = InLayout(node, data, pd.src_desc());
    const int dst = NewValue(pd.dst_desc(), q.min_output, q.max_output);
    if (sum >= 0) {
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
    s->Constant(DNNL_ARG_ATTR_SCALES | DNNL_ARG_WEIGHTS,
                Owned(r_.engine_, dnnl::memory::desc({oc}, dt::f32, tag::a), q.requantize.data()));
    if (sum >= 0) s->Read(DNNL_ARG_DST, dst, pd.dst_desc());
    s->Write(DNNL_ARG_DST, dst, pd.dst_desc());
    SetOutputs(node, dst, q.min_output, q.max_output);
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
      const int64_t size = (a.full_convention ? (span + a.stride[i] - 1) / a.stride[i]
                                              : span / a.stride[i]) + 1;
      out_dims[2 + i] = size;
      pad_r[i] = (size - 1) * a.stride[i] + a.kernel[i] - d[2 + i] - a.pad[i];
    }
    const dnnl::algorithm alg = a.max ? dnnl::algorithm::pooling_max
                                : a.count_include_pad ? dnnl::algorithm::pooling_avg_include_padding
                                                      : dnnl::algorithm::pooling_avg_exclude_padding;
    dnnl::pooling_forward::primitive_desc pd(
        r_.engine_, dnnl::prop_kind::forward_inference, alg, in.md,
        dnnl::memory::desc(out_dims, in.md.get_data_type(), tag::any), {a.stride[0], a.stride[1]},
        {a.kernel[0], a.kernel[1]}, {0, 0}, {a.pad[0], a.pad[1]}, pad_r);
    const float min = Scalar(node->inputs[1]), max = Scalar(node->inputs[2]);
    const int dst = NewValue(pd.dst_desc(), min, max);
    PrimitiveStep* s = AddStep(node, "", dnnl::pooling_forward(pd));
    s->Read(DNNL_ARG_SRC, data, in.md);
    s->Write(DNNL_ARG_DST, dst, pd.dst_desc());
    SetOutputs(node, dst, min, max);
  }

  void Relu(const Node* node) {
    const int data = Data(node->inputs[0]);
    const dnnl::memory::desc md = r_.values_[data].md;
    dnnl::eltwise_forward::primitive_desc pd(r_.engine_, dnnl::prop_kind::forward_inference,
                                             dnnl::algorithm::eltwise_relu, md, md, 0.f, 0.f);
    const float min = Scalar(node->inputs[1]), max = Scalar(node->inputs[2]);
    const int dst = NewValue(md, min, max);
    PrimitiveStep* s = AddStep(node, "", dnnl::eltwise_forward(pd));
    s->Read(DNNL_ARG_SRC, data, md);
    s->Write(DNNL_ARG_DST, dst, md);
    SetOutputs(node, dst, min, max);
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
      const int alias = NewValue(flat, v.min, v.max);
      r_.values_[alias].alias_of = value;
      return alias;
    }
    const dnnl::memory::desc plain = PlainDesc(d, v.md.get_data_type());
    const int out = NewValue(flat, v.min, v.max);
    dnnl::reorder::primitive_desc pd(r_.engine_, v.md, r_.engine_, plain);
    PrimitiveStep* s = AddStep(node, "/flatten", dnnl::reorder(pd));
    s->Read(DNNL_ARG_FROM, value, v.md);
    s->Write(DNNL_ARG_TO, out, plain);
    return out;
  }

  void Flatten(const Node* node) {
    const int out = Flattened(node, Data(node->inputs[0]));
    SetOutputs(node, out, Scalar(node->inputs[1]), Scalar(node->inputs[2]));
  }

  void FullyConnected(const Node* node, const FullyConnectedAttrs& a) {
    const int base = a.no_bias ? 2 : 3;
    if (static_cast<int>(node->inputs.size()) != base * 3) Fail(node, "unexpected input count");
    const int raw = Data(node->inputs[0]);
    if (!a.flatten && r_.values_[raw].md.get_dims().size() != 2) {
      Fail(node, "flatten=False on data that is not 2-D");
    }
    const int data = Flattened(node, raw);
    const Value in = r_.values_[data];  // a copy: NewValue() may move the vector
    const int64_t n = in.md.get_dims()[0], k = in.md.get_dims()[1], oc = a.num_hidden;
    const MXTensor& w = Param(node->inputs[1], mxnet::ext::kInt8, oc * k);
    const MXTensor* b = a.no_bias ? nullptr : &Param(node->inputs[2], mxnet::ext::kInt8, oc);
    auto scalar = [&](int i) { return Scalar(node->inputs[base + i]); };
    const FullyConnectedOutput out{!a.float_output, a.relu, a.min_calib, a.max_calib};
    QuantizedFullyConnected q;
    std::string error;
    if (!QuantizeFullyConnected(ToQuantType(in.md.get_data_type(), node), scalar(0), scalar(1),
                                static_cast<const int8_t*>(w.data_ptr), oc * k, scalar(2),
                                scalar(3), b ? static_cast<const int8_t*>(b->data_ptr) : nullptr,
                                oc, b ? scalar(4) : 0.f, b ? scalar(5) : 0.f, out, &q, &error)) {
      Fail(node, error);
    }
    dnnl::primitive_attr attr;
    attr.set_scales_mask(DNNL_ARG_WEIGHTS, 0);
    if (a.relu) {
      dnnl::post_ops ops;
      ops.append_eltwise(dnnl::algorithm::eltwise_relu, 0.f, 0.f);
      ops.append_eltwise(dnnl::algorithm::eltwise_linear, q.post_scale, 0.f);
      attr.set_post_ops(ops);
    }
    const dnnl::memory::desc bias_md({oc}, dt::f32, tag::a);
    const dt dst_type = a.float_output ? dt::f32 : a.relu ? dt::u8 : dt::s8;
    const dnnl::memory::desc dst_md({n, oc}, dst_type, tag::ab);
    dnnl::inner_product_forward::primitive_desc pd(
        r_.engine_, dnnl::prop_kind::forward_inference, in.md,
        dnnl::memory::desc({oc, k}, dt::s8, tag::any), bias_md, dst_md, attr);
    dnnl::memory weights_mem =
        Reordered(dnnl::memory::desc({oc, k}, dt::s8, tag::ab), q.weights.data(), pd.weights_desc());
    std::vector<float> bias_f32(oc, 0.f);
    for (size_t c = 0; c < q.bias.size(); ++c) bias_f32[c] = static_cast<float>(q.bias[c]) * q.output_scale;
    const int dst = NewValue(pd.dst_desc(), a.min_calib, a.max_calib);
    PrimitiveStep* s = AddStep(node, "", dnnl::inner_product_forward(pd));
    s->Read(DNNL_ARG_SRC, data, in.md);
    s->Constant(DNNL_ARG_WEIGHTS, weights_mem);
    s->Constant(DNNL_ARG_BIAS, Owned(r_.engine_, bias_md, bias_f32.data()));
    s->Constant(DNNL_ARG_ATTR_SCALES | DNNL_ARG_WEIGHTS,
                Owned(r_.engine_, dnnl::memory::desc({1}, dt::f32, tag::a), &q.output_scale));
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
    const MXTensor& gamma = Param(node->inputs[1], mxnet::ext::kFloat32, c);
    const MXTensor& beta = Param(node->inputs[2], mxnet::ext::kFloat32, c);
    const MXTensor& mean = Param(node->inputs[3], mxnet::ext::kFloat32, c);
    const MXTensor& var = Param(node->inputs[4], mxnet::ext::kFloat32, c);
    const ChannelParams params{static_cast<const float*>(gamma.data_ptr),
                               static_cast<const float*>(beta.data_ptr),
                               static_cast<const float*>(mean.data_ptr),
                               static_cast<const float*>(var.data_ptr), c};
    const QuantType out_type = a.relu ? QuantType::kUint8 : QuantType::kInt8;
    FoldedScaleShift folded;
    std::string error;
    bool ok;
    if (a.float_input) {
      ok = FoldScaleShiftFloatInput(a.bn, params, out_type, a.relu, &folded, &error);
    } else {
      ok = FoldScaleShift(a.bn, params, Scalar(node->inputs[5]), Scalar(node->inputs[6]),
                          ToQuantType(in.md.get_data_type(), node), out_type, a.relu, &folded,
                          &error);
    }
    if (!ok) Fail(node, error);

    const dt dst_type = a.relu ? dt::u8 : dt::s8;
    if (!a.float_input && IsChannelsLast(in.md) && HandKernelsAllowed()) {
      // dst = src * scale[c] + shift[c] with the hand-vectorized kernel, in NHWC.
      int64_t pixels = 1;
      for (size_t i = 0; i < d.size(); ++i) pixels *= i == 1 ? 1 : d[i];
      const dnnl::memory::desc dst_md = WithType(in.md, dst_type);
      const int dst = NewValue(dst_md, folded.min_output, folded.max_output);
      r_.steps_.emplace_back(new ChannelAffineStep(node->name, data, dst, folded.scale,
                                                   folded.shift, in.md.get_data_type(),
                                                   dst_type, pixels));
      FinishBatchNorm(node, a, d, dst, dst_md, folded);
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
    const int dst = NewValue(pd.dst_desc(), folded.min_output, folded.max_output);
    PrimitiveStep* s = AddStep(node, "", dnnl::binary(pd));
    s->Read(DNNL_ARG_SRC_0, data, in.md);
    s->Constant(DNNL_ARG_SRC_1, Owned(r_.engine_, channel_md, folded.scale.data()));
    s->Constant(DNNL_ARG_ATTR_MULTIPLE_POST_OP(0) | DNNL_ARG_SRC_1,
                Owned(r_.engine_, channel_md, folded.shift.data()));
    s->Write(DNNL_ARG_DST, dst, pd.dst_desc());
    FinishBatchNorm(node, a, d, dst, pd.dst_desc(), folded);
  }

  // The BatchNorm's outputs, or with global average pooling fused, the mean step after it.
  void FinishBatchNorm(const Node* node, const BatchNormOpAttrs& a, const dims& d, int dst,
                       const dnnl::memory::desc& dst_md, const FoldedScaleShift& folded) {
    const int64_t c = d[1];
    if (!a.global_avg_pool) {
      SetOutputs(node, dst, folded.min_output, folded.max_output);
      return;
    }
    // The mean of each channel, summed exactly over the channels-last BN+ReLU output.
    int64_t count = 1;
    for (size_t i = 2; i < d.size(); ++i) count *= d[i];
    if (count > ChannelMeanKernel::kMaxInner) {
      Fail(node, "pools " + std::to_string(count) + " values per channel, more than an int32 "
                 "sum holds exactly");
    }
    int src = dst;
    if (!IsChannelsLast(dst_md)) src = InLayout(node, dst, ChannelsLast(dst_md));
    dims pooled(d.size(), 1);
    pooled[0] = d[0];
    pooled[1] = c;
    const int mean_value = NewValue(PlainDesc(pooled, dt::u8), folded.min_output, folded.max_output);
    r_.steps_.emplace_back(new ChannelMeanStep(node->name + "/mean", src, mean_value, d[0], c,
                                               count));
    SetOutputs(node, mean_value, folded.min_output, folded.max_output);
  }

  // MXNet's quantize_v2 with a calibrated range: q = saturate(round(x * scale)),
  // scale = (127.5 | 255.5) / max(|min|, |max|), as one reorder (NHWC for 4-D
  // data, the layout int8 convolutions read).
  void Quantize(const Node* node, const QuantizeAttrs& a) {
    const int data = Data(node->inputs[0]);
    const Value in = r_.values_[data];
    if (in.md.get_data_type() != dt::f32) Fail(node, "regions quantize float32 data only");
    const QuantType type = a.uint8_output() ? QuantType::kUint8 : QuantType::kInt8;
    const float range = std::max(std::fabs(a.min_calib), std::fabs(a.max_calib));
    if (!(range > 0.f)) Fail(node, "the calibrated range is empty");
    const float scale = QuantizedRange(type) / range;
    const dims d = in.md.get_dims();
    const dt out_type = type == QuantType::kUint8 ? dt::u8 : dt::s8;
    const dnnl::memory::desc out_md =
        d.size() == 4 ? dnnl::memory::desc(d, out_type, tag::nhwc) : PlainDesc(d, out_type);
    const float lo = type == QuantType::kUint8 ? a.min_calib : -range;
    const float hi = type == QuantType::kUint8 ? a.max_calib : range;
    SetOutputs(node, ScaledCopy(node, data, out_md, scale, lo, hi), lo, hi);
  }

  // MXNet's dequantize: x = q * (max(|min|, |max|) / (127.5 | 255.5)), float32 NCHW.
  void Dequantize(const Node* node) {
    const int data = Data(node->inputs[0]);
    const Value in = r_.values_[data];
    const float lo = Scalar(node->inputs[1]), hi = Scalar(node->inputs[2]);
    const float scale = std::max(std::fabs(lo), std::fabs(hi)) /
                        QuantizedRange(ToQuantType(in.md.get_data_type(), node));
    values_[{node, 0}] = ScaledCopy(node, data, PlainDesc(in.md.get_dims(), dt::f32), scale, 0.f,
                                    0.f);
  }

  // A new value: saturate(round(fl(src * scale))) in layout and type `dst_md`,
  // one reorder with a source scale (oneDNN rounds to nearest even).
  int ScaledCopy(const Node* node, int src, const dnnl::memory::desc& dst_md, float scale,
                 float lo, float hi) {
    const dnnl::memory::desc src_md = r_.values_[src].md;
    dnnl::primitive_attr attr;
    attr.set_scales_mask(DNNL_ARG_SRC, 0);
    dnnl::reorder::primitive_desc pd(r_.engine_, src_md, r_.engine_, dst_md, attr);
    const int dst = NewValue(dst_md, lo, hi);
    PrimitiveStep* s = AddStep(node, "/scale", dnnl::reorder(pd));
    s->Read(DNNL_ARG_FROM, src, src_md);
    s->Constant(DNNL_ARG_ATTR_SCALES | DNNL_ARG_SRC,
                Owned(r_.engine_, dnnl::memory::desc({1}, dt::f32, tag::a), &scale));
    s->Write(DNNL_ARG_TO, dst, dst_md);
    return dst;
  }

  // `md` if strided (plain, NHWC, ...), else the plain layout of its dims.
  static dnnl::memory::desc StridedOrPlain(const dnnl::memory::desc& md) {
    return IsStrided(md) ? md : PlainDesc(md.get_dims(), md.get_data_type());
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
    const float lhs_abs = std::max(std::fabs(Scalar(node->inputs[2])), std::fabs(Scalar(node->inputs[3])));
    const float rhs_abs = std::max(std::fabs(Scalar(node->inputs[4])), std::fabs(Scalar(node->inputs[5])));
    dt out_type;
    float out_min, out_max, out_range;
    if (a.calibrated) {
      out_type = lhs_type == rhs_type ? lhs_type : dt::s8;
      out_min = a.min_calib;
      out_max = a.max_calib;
      out_range = QuantizedRange(out_type == dt::u8 ? QuantType::kUint8 : QuantType::kInt8);
    } else {
      out_type = dt::s32;
      out_max = lhs_abs + rhs_abs;
      out_min = -out_max;
      out_range = 2147483648.f;
    }
    // The scale that takes an operand of type q and max-abs range `abs` to the output.
    auto scale_of = [&](QuantType q, float abs) {
      if (a.calibrated) {
        const float out_scale = out_range / std::max(std::fabs(a.min_calib), std::fabs(a.max_calib));
        return out_scale / (QuantizedRange(q) / abs);
      }
      return (abs * out_range) / ((lhs_abs + rhs_abs) * QuantizedRange(q));
    };
    float lhs_scale = scale_of(lq, lhs_abs), rhs_scale = scale_of(rq, rhs_abs);
    // Both operands in one strided layout (the left one's).
    const dnnl::memory::desc layout = StridedOrPlain(r_.values_[lhs].md);
    lhs = InLayout(node, lhs, layout);
    rhs = InLayout(node, rhs, WithType(layout, rhs_type));
    dt a_type = lhs_type, b_type = rhs_type;
    if (lhs_type != rhs_type) {
      if (rhs_type == dt::u8) {
        rhs = ScaledCopy(node, rhs, WithType(layout, dt::s8), rhs_scale, 0.f, 0.f);
        rhs_scale = 1.f;
        b_type = dt::s8;
      } else {
        lhs = ScaledCopy(node, lhs, WithType(layout, dt::s8), lhs_scale, 0.f, 0.f);
        lhs_scale = 1.f;
        a_type = dt::s8;
      }
    }
    const int dst = NewValue(WithType(layout, out_type), out_min, out_max);
    r_.steps_.emplace_back(new ScaledAddStep(node->name, lhs, rhs, dst, lhs_scale, rhs_scale,
                                             a_type, b_type, out_type,
                                             static_cast<int64_t>(layout.get_size())));
    SetOutputs(node, dst, out_min, out_max);
  }

  // MXNet's quantized concat: output range (min(0, mins), max(0, maxs)),
  // int8 if any input is; each input rescaled to it unless its scale is already
  // the output's (exact float comparison), then a plain concatenation.
  void Concat(const Node* node, const ConcatAttrs& c) {
    const int n = c.num_args;
    std::vector<int> srcs(n);
    std::vector<float> mins(n), maxs(n);
    bool any_signed = false;
    float out_min = 0.f, out_max = 0.f;
    for (int i = 0; i < n; ++i) {
      srcs[i] = Data(node->inputs[i]);
      mins[i] = Scalar(node->inputs[n + 2 * i]);
      maxs[i] = Scalar(node->inputs[n + 2 * i + 1]);
      any_signed = any_signed || ToQuantType(r_.values_[srcs[i]].md.get_data_type(), node) ==
                                     QuantType::kInt8;
      out_min = std::min(out_min, mins[i]);
      out_max = std::max(out_max, maxs[i]);
    }
    const QuantType out_q = any_signed ? QuantType::kInt8 : QuantType::kUint8;
    const dt out_type = any_signed ? dt::s8 : dt::u8;
    const float out_scale = QuantizedRange(out_q) / std::max(std::fabs(out_min), std::fabs(out_max));
    std::vector<dnnl::memory::desc> mds;
    for (int i = 0; i < n; ++i) {
      const Value v = r_.values_[srcs[i]];
      const QuantType q = ToQuantType(v.md.get_data_type(), node);
      const float scale = QuantizedRange(q) / std::max(std::fabs(mins[i]), std::fabs(maxs[i]));
      if (scale != out_scale || v.md.get_data_type() != out_type) {
        srcs[i] = ScaledCopy(node, srcs[i], WithType(StridedOrPlain(v.md), out_type),
                             out_scale / scale, 0.f, 0.f);
      }
      mds.push_back(r_.values_[srcs[i]].md);
    }
    dims out_dims = mds[0].get_dims();
    if (c.dim >= static_cast<int>(out_dims.size())) Fail(node, "concat dimension out of range");
    out_dims[c.dim] = 0;
    for (const auto& md : mds) out_dims[c.dim] += md.get_dims()[c.dim];
    dnnl::concat::primitive_desc pd(r_.engine_, dnnl::memory::desc(out_dims, out_type, tag::any),
                                    c.dim, mds);
    const int dst = NewValue(pd.dst_desc(), out_min, out_max);
    PrimitiveStep* s = AddStep(node, "", dnnl::concat(pd));
    for (int i = 0; i < n; ++i) s->Read(DNNL_ARG_MULTIPLE_SRC + i, srcs[i], mds[i]);
    s->Write(DNNL_ARG_DST, dst, pd.dst_desc());
    SetOutputs(node, dst, out_min, out_max);
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
        if (t.dtype != mxnet::ext::kFloat32 || t.size() != 1) Fail(e.node, "a range output must be one float32");
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
  std::map<Key, int> values_;     // tensor outputs
  std::map<Key, float> scalars_;  // range outputs (min, max)
  std::map<Key, int> uses_;       // consumers (and graph outputs) of each node output
  std::map<Key, int> reads_;      // of them, those built so far

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
      step->Execute(stream_, values_);
    } catch (const dnnl::error& e) {
      throw std::runtime_error(step->name() + ": oneDNN error: " + e.what());
    }
  }
  stream_.wait();
}

}  // namespace region
}  // namespace bnq
