// The region compiler's builder (private to src_cpp/region): the state of
// one build of a CompiledRegion, and the layout helpers its parts share.
// region_compiler.cc holds its core (values, ranges, parameters, outputs);
// build_conv_fc.cc, build_tensor_ops.cc, build_avg_pool_batch_norm.cc and
// build_quantize.cc build the steps of each op kind.
#pragma once

#include <cmath>
#include <cstring>
#include <functional>
#include <map>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "../avg_pooling_kernel.h"
#include "../scale_shift_folding.h"
#include "channel_affine_kernel.h"
#include "quantized_conv_scales.h"
#include "region_compiler.h"
#include "region_node_attrs.h"

namespace bnq {
namespace region {

using mxnet::ext::Graph;
using mxnet::ext::MXTensor;
using mxnet::ext::NodeEntry;
using dt = dnnl::memory::data_type;
using tag = dnnl::memory::format_tag;
using dims = dnnl::memory::dims;

[[noreturn]] inline void Fail(const Node* node, const std::string& message) {
  throw std::runtime_error((node ? node->name + ": " : std::string()) + message);
}

inline dt ToDnnlType(int mx_type, const Node* node) {
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

inline tag PlainTag(size_t ndims) {
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

inline dnnl::memory::desc PlainDesc(const dims& d, dt type) {
  return {d, type, PlainTag(d.size())};
}

// A strided layout without blocks (plain, NHWC, ...): can be viewed with another type.
inline bool IsStrided(const dnnl::memory::desc& md) {
  return md.get_format_kind() == dnnl::memory::format_kind::blocked && md.get_inner_nblks() == 0;
}

// Dense channels-last: (n, spatial..., c) with c contiguous.
inline bool IsChannelsLast(const dnnl::memory::desc& md) {
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

inline dnnl::memory::desc ChannelsLast(const dnnl::memory::desc& md) {
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

inline dnnl::memory::desc WithType(const dnnl::memory::desc& md, dt type) {
  return {md.get_dims(), type, md.get_strides()};
}

// The hand-vectorized kernels run with the widest instruction set that the
// CPU has and oneDNN may use too (ONEDNN_MAX_CPU_ISA limits both, so tests of
// older instruction sets run the AVX2 kernel, or oneDNN's primitives below
// AVX2).
inline AffineIsa HandKernelIsa() {
  static const AffineIsa isa = [] {
    const int onednn = static_cast<int>(dnnl::get_effective_cpu_isa());
    const AffineIsa cpu = ChannelAffineCpuIsa();
    if (cpu == AffineIsa::kAvx512 &&
        (onednn & dnnl_cpu_isa_avx512_core) == dnnl_cpu_isa_avx512_core) {
      return AffineIsa::kAvx512;
    }
    if (cpu != AffineIsa::kNone && (onednn & dnnl_cpu_isa_avx2) == dnnl_cpu_isa_avx2) {
      return AffineIsa::kAvx2;
    }
    return AffineIsa::kNone;
  }();
  return isa;
}

// The mean kernel's (activation_mean_kernel.h) under the same rule.
inline MeanIsa MeanKernelIsa() {
  return HandKernelIsa() == AffineIsa::kAvx512 ? MeanIsa::kAvx512 : MeanIsa::kPortable;
}

inline QuantType ToQuantType(dt type, const Node* node) {
  if (type == dt::s8) return QuantType::kInt8;
  if (type == dt::u8) return QuantType::kUint8;
  Fail(node, "expects int8 or uint8 data");
}

// A oneDNN memory holding a copy of `bytes` (owned by oneDNN).
inline dnnl::memory Owned(const dnnl::engine& engine, const dnnl::memory::desc& md,
                          const void* bytes) {
  dnnl::memory m(md, engine);
  std::memcpy(m.get_data_handle(), bytes, md.get_size());
  return m;
}

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

  void Build(const std::vector<MXTensor>& outputs);

 private:
  using Key = std::pair<const Node*, int>;

  // Inputs, values, ranges and steps (region_compiler.cc).
  const MXTensor& InputTensor(const NodeEntry& e, InputUse use);
  int Data(const NodeEntry& e);
  const MXTensor& Param(const NodeEntry& e, int dtype, int64_t elements);
  RangeEnd End(const NodeEntry& e);
  float Scalar(const Node* consumer, const NodeEntry& e);

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

  void SetOutputs(const Node* node, int value, RangeEnd min, RangeEnd max);
  void SetOutputs(const Node* node, int value, float min, float max);
  PrimitiveStep* AddStep(const Node* node, const std::string& what, dnnl::primitive p);
  int InLayout(const Node* node, int value, const dnnl::memory::desc& md);
  dnnl::memory Reordered(const dnnl::memory::desc& plain, const void* data,
                         const dnnl::memory::desc& md);

  std::vector<float> Floats(const MXTensor& t) {
    const float* p = static_cast<const float*>(t.data_ptr);
    return std::vector<float>(p, p + t.size());
  }

  void Outputs(const std::vector<MXTensor>& outputs);

  // The convolution and fully connected ops (build_conv_fc.cc).
  void Conv(const Node* node, const ConvAttrs& a);
  void FullyConnected(const Node* node, const FullyConnectedAttrs& a);

  // Pooling, relu, flatten, BatchNorm, add, concat (build_tensor_ops.cc).
  void Pooling(const Node* node, PoolingAttrs a);
  void AvgPoolingInOwnRange(const Node* node, const PoolingAttrs& a, const OwnRange& range);
  void Relu(const Node* node);
  int Flattened(const Node* node, int value);
  void Flatten(const Node* node);
  void BatchNorm(const Node* node, const BatchNormOpAttrs& a);
  void ConcatBatchNorm(const Node* node, const BatchNormOpAttrs& a);

  // The BatchNorm ops with an average pooling in (build_avg_pool_batch_norm.cc).
  void AvgPoolBatchNorm(const Node* node, const BatchNormOpAttrs& a);
  // The steps of one input of them (the pooling with the BatchNorm's
  // post-ops, or for a head the window means and the BN+act mean), and how
  // to give them another fold.
  struct PooledSteps {
    int value = -1;                      // the output
    Step* first = nullptr;               // the first step that reads the fold
    PrimitiveStep* pool = nullptr;       // with the fold as constants, or
    ActivationMeanStep* mean = nullptr;  // the head's step that holds it
    int output_scale_arg = 0;            // of a curve in `pool`
  };
  PooledSteps AvgPoolBatchNormSteps(const Node* node, const std::string& what, int src,
                                    const AvgPoolingShape& pool, const FoldedScaleShift& folded,
                                    QuantType out_type, bool head);
  static void SetFold(const PooledSteps& steps, FoldedScaleShift folded);
  // The concat form: each input's steps, then one concatenation; returns the
  // output value.  `refold` (for ranges measured at run time, else empty)
  // gives every input's fold at each forward.
  using ConcatRefold = std::function<std::vector<FoldedScaleShift>(Ranges&)>;
  int ConcatAvgPoolBatchNorm(const Node* node, const BatchNormOpAttrs& a,
                             const std::vector<int>& srcs,
                             const std::vector<FoldedScaleShift>& folded, QuantType out_type,
                             const ConcatRefold& refold);

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
                               float lhs_abs, float rhs_abs);

  void Add(const Node* node, const AddAttrs& a);
  void Concat(const Node* node, const ConcatAttrs& c);

  // quantize_v2, requantize, dequantize and scaled copies (build_quantize.cc).
  // A scaled copy whose scale and output range `rule` computes from the
  // ranges: once when every range it reads is constant, else before each
  // forward (into two new range slots).
  using RangeRule = std::function<Requantized(const Ranges&)>;
  void RangedCopy(const Node* node, int src, const dnnl::memory::desc& dst_md, bool run_time,
                  RangeRule rule);
  void Quantize(const Node* node, const QuantizeAttrs& a);
  int MeasureRange(const Node* node, int value);
  void Requantize(const Node* node, const QuantizeAttrs& a);
  void Dequantize(const Node* node);
  int ScaledCopy(const Node* node, int src, const dnnl::memory::desc& dst_md, float scale,
                 PrimitiveStep** step = nullptr);

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

}  // namespace region
}  // namespace bnq
