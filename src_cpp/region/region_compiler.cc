#include "region_compiler.h"

#include <cxxabi.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <typeinfo>

#include "region_builder.h"

namespace bnq {
namespace region {

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

void CompiledRegion::Builder::Build(const std::vector<MXTensor>& outputs) {
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
        if (parsed.pool_own_range) {
          AvgPoolingInOwnRange(node, parsed.pool, parsed.pool_range);
        } else {
          Pooling(node, parsed.pool);
        }
        break;
      case OpKind::kRelu:
        Relu(node);
        break;
      case OpKind::kFlatten:
        Flatten(node);
        break;
      case OpKind::kBatchNorm:
        if (parsed.bn.num_concat > 0) {
          ConcatBatchNorm(node, parsed.bn);
        } else if (parsed.bn.avg_pool_in) {
          AvgPoolBatchNorm(node, parsed.bn);
        } else {
          BatchNorm(node, parsed.bn);
        }
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

const MXTensor& CompiledRegion::Builder::InputTensor(const NodeEntry& e, InputUse use) {
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
int CompiledRegion::Builder::Data(const NodeEntry& e) {
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
const MXTensor& CompiledRegion::Builder::Param(const NodeEntry& e, int dtype, int64_t elements) {
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
RangeEnd CompiledRegion::Builder::End(const NodeEntry& e) {
  auto found = scalars_.find({e.node, e.entry});
  if (found != scalars_.end()) return found->second;
  const MXTensor& t = InputTensor(e, InputUse::kScalar);
  if (t.dtype != mxnet::ext::kFloat32 || t.size() != 1) Fail(e.node, "a range must be one float32");
  const float v = *static_cast<const float*>(t.data_ptr);
  r_.input_records_[input_index_[e.node]].scalar = v;
  return Constant(v);
}

// A range end that must be known when the region is built.
float CompiledRegion::Builder::Scalar(const Node* consumer, const NodeEntry& e) {
  const RangeEnd end = End(e);
  if (end.at_run_time()) {
    Fail(consumer,
         "needs a constant input range, and " + e.node->name + " measures its range at run time");
  }
  return end.value;
}

void CompiledRegion::Builder::SetOutputs(const Node* node, int value, RangeEnd min, RangeEnd max) {
  values_[{node, 0}] = value;
  scalars_[{node, 1}] = min;
  scalars_[{node, 2}] = max;
}

void CompiledRegion::Builder::SetOutputs(const Node* node, int value, float min, float max) {
  SetOutputs(node, value, Constant(min), Constant(max));
}

PrimitiveStep* CompiledRegion::Builder::AddStep(const Node* node, const std::string& what,
                                                dnnl::primitive p) {
  r_.steps_.emplace_back(new PrimitiveStep(node->name + what, std::move(p)));
  return static_cast<PrimitiveStep*>(r_.steps_.back().get());
}

// `value` in layout `md` (same dims and type): itself, or a reordered copy.
int CompiledRegion::Builder::InLayout(const Node* node, int value, const dnnl::memory::desc& md) {
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
dnnl::memory CompiledRegion::Builder::Reordered(const dnnl::memory::desc& plain, const void* data,
                                                const dnnl::memory::desc& md) {
  dnnl::memory src(plain, r_.engine_, const_cast<void*>(data));
  dnnl::memory dst(md, r_.engine_);
  dnnl::reorder(src, dst).execute(r_.stream_, src, dst);
  r_.stream_.wait();
  return dst;
}

void CompiledRegion::Builder::Outputs(const std::vector<MXTensor>& outputs) {
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

CompiledRegion::CompiledRegion(const Graph& graph, const std::vector<MXTensor>& inputs,
                               const std::vector<MXTensor>& outputs)
    : engine_(dnnl::engine::kind::cpu, 0), stream_(engine_) {
  if (const char* every = std::getenv("MXNET_BNQ_REGION_PROFILE")) {
    profile_every_ = std::max(0, std::atoi(every));
  }
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

namespace {

// The step's class ("PrimitiveStep", ...), for the profile.
std::string StepKind(const Step& step) {
  int status = 0;
  char* name = abi::__cxa_demangle(typeid(step).name(), nullptr, nullptr, &status);
  std::string kind = status == 0 && name != nullptr ? name : typeid(step).name();
  std::free(name);
  const size_t colon = kind.rfind("::");
  return colon == std::string::npos ? kind : kind.substr(colon + 2);
}

}  // namespace

void CompiledRegion::PrintProfile() {
  double total = 0;
  for (const auto& kv : profile_seconds_) total += kv.second.second;
  std::fprintf(stderr, "mxnet_bnq region profile: %zu steps, %d forwards, %.3f ms per forward\n",
               steps_.size(), profiled_forwards_, 1e3 * total / profiled_forwards_);
  for (const auto& kv : profile_seconds_) {
    std::fprintf(stderr, "  %-28s %4d steps %9.3f ms per forward\n", kv.first.c_str(),
                 kv.second.first / profiled_forwards_, 1e3 * kv.second.second / profiled_forwards_);
  }
  profile_seconds_.clear();
  profiled_forwards_ = 0;
}

void CompiledRegion::Run(const std::vector<MXTensor>& inputs,
                         const std::vector<MXTensor>& outputs) {
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (input_values_[i] >= 0) values_[input_values_[i]].data = inputs[i].data_ptr;
  }
  for (size_t i = 0; i < outputs.size(); ++i) values_[output_values_[i]].data = outputs[i].data_ptr;
  using Clock = std::chrono::steady_clock;
  for (auto& step : steps_) {
    const Clock::time_point start = profile_every_ > 0 ? Clock::now() : Clock::time_point();
    try {
      step->Rescale(ranges_);
      step->Execute(stream_, values_, ranges_);
    } catch (const dnnl::error& e) {
      throw std::runtime_error(step->name() + ": oneDNN error: " + e.what());
    }
    if (profile_every_ > 0) {  // each step's own time: wait for it to finish
      stream_.wait();
      auto& entry = profile_seconds_[StepKind(*step)];
      entry.first += 1;
      entry.second += std::chrono::duration<double>(Clock::now() - start).count();
    }
  }
  stream_.wait();
  if (profile_every_ > 0 && ++profiled_forwards_ == profile_every_) PrintProfile();
}

}  // namespace region
}  // namespace bnq
