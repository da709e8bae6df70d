// The region compiler: turns a region's graph (the subgraph the partitioner
// claimed) and the tensors of a forward call into a sequence of oneDNN steps
// with planned buffers.  Everything that depends on the parameters (quantized
// and reordered weights, folded BatchNorms, scales) is computed here, once;
// Run() only executes the steps.  The exception are ranges that uncalibrated
// quantize and requantize nodes measure from the data at each forward: the
// steps whose scales follow from them recompute those before they run.
//
// A compiled region remembers what it was built from: the shapes and types of
// every input, the version of every parameter and the value of every range
// it read.  Matches() tells whether a forward's inputs are still those (else
// the caller builds again: new shapes re-plan, a changed weight re-quantizes).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <oneapi/dnnl/dnnl.hpp>
#include <string>
#include <vector>

#include "buffer_plan.h"
#include "mxnet/lib_api.h"
#include "region_steps.h"

namespace bnq {
namespace region {

class CompiledRegion {
 public:
  // Throws std::runtime_error (with a message naming the node) for what the
  // region cannot run, dnnl::error for oneDNN failures.
  CompiledRegion(const mxnet::ext::Graph& graph, const std::vector<mxnet::ext::MXTensor>& inputs,
                 const std::vector<mxnet::ext::MXTensor>& outputs);
  // Empty when the region can run these tensors as built, else what changed.
  // Parameters whose version changed with the same bytes are taken as they are.
  std::string Mismatch(const std::vector<mxnet::ext::MXTensor>& inputs,
                       const std::vector<mxnet::ext::MXTensor>& outputs);

  void Run(const std::vector<mxnet::ext::MXTensor>& inputs,
           const std::vector<mxnet::ext::MXTensor>& outputs);

  size_t step_count() const { return steps_.size(); }
  size_t planned_bytes() const { return plan_.total_bytes(); }

 private:
  class Builder;
  static uint64_t Digest(const mxnet::ext::MXTensor& t);

  // How the region used each input when it was built.
  enum class InputUse { kUnused, kData, kParam, kScalar };
  struct InputRecord {
    std::vector<int64_t> shape;
    int dtype;
    InputUse use = InputUse::kUnused;
    size_t version = 0;   // kParam
    uint64_t digest = 0;  // kParam: of its bytes
    float scalar = 0.f;   // kScalar
  };
  std::vector<InputRecord> input_records_;
  std::vector<std::vector<int64_t>> output_shapes_;
  std::vector<int> output_dtypes_;

  dnnl::engine engine_;
  dnnl::stream stream_;  // one per compiled region: a region runs on one thread at a time
  std::vector<Value> values_;
  std::vector<int> input_values_;   // per region input: its value, or -1
  std::vector<int> output_values_;  // per region output: its value
  std::vector<std::unique_ptr<Step>> steps_;
  Ranges ranges_;  // the run-time range slots the steps fill and read
  BufferPlan plan_;
  // MXNET_BNQ_REGION_PROFILE=N: each step waited for and timed; the time per
  // step kind is printed to stderr every N forwards.
  void PrintProfile();
  int profile_every_ = 0;
  std::map<std::string, std::pair<int, double>> profile_seconds_;  // kind: (steps, seconds)
  int profiled_forwards_ = 0;
};

}  // namespace region
}  // namespace bnq
