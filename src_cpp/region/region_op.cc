// The region subgraph op and the BNQ_REGIONS partitioner.
//
//   qsym.optimize_for('BNQ_REGIONS', qargs, qaux)
//
// claims maximal connected sets of the nodes a region can run (see
// region_node_attrs.h) and replaces each by one _bnq_quantized_region node.
// The op is stateful: its state, made once per bound executor, compiles the
// region at the first forward (when the parameters and input ranges are
// known) and again when an input's shape, a parameter or a range changes.
#include <cstdlib>
#include <iostream>
#include <list>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "../error_reporting.h"
#include "../op_names.h"
#include "mxnet/lib_api.h"
#include "region_claims.h"
#include "region_compiler.h"

using namespace mxnet::ext;  // NOLINT

namespace bnq {
namespace region {
namespace {

template <typename Body>
MXReturnValue Guarded(Body body) {
  try {
    return body();
  } catch (const dnnl::error& e) {
    ReportError(kRegionOp, std::string("oneDNN error: ") + e.what());
  } catch (const std::exception& e) {
    ReportError(kRegionOp, e.what());
  } catch (...) {
    ReportError(kRegionOp, "unknown error");
  }
  return MX_FAIL;
}

// Compiled regions whose state is gone, kept for the next state of the same
// region: Gluon's CachedOp (a SymbolBlock, quantize_net) creates a new op
// state at every forward unless hybridized with static_alloc and
// static_shape, and compiling resnet50_v2 takes a few hundred ms.  A region is
// used by one state at a time; the pool is small because idle regions keep
// their buffers.
class CompiledRegionPool {
 public:
  static constexpr size_t kCapacity = 2;

  std::unique_ptr<CompiledRegion> Take(const std::string& key, const std::vector<MXTensor>& in,
                                       const std::vector<MXTensor>& out) {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto it = idle_.begin(); it != idle_.end(); ++it) {
      if (it->first == key && it->second->Mismatch(in, out).empty()) {
        std::unique_ptr<CompiledRegion> region = std::move(it->second);
        idle_.erase(it);
        return region;
      }
    }
    return nullptr;
  }

  void Give(const std::string& key, std::unique_ptr<CompiledRegion> region) {
    std::lock_guard<std::mutex> lock(mutex_);
    idle_.emplace_front(key, std::move(region));
    if (idle_.size() > kCapacity) idle_.pop_back();  // the least recently used
  }

 private:
  std::mutex mutex_;
  std::list<std::pair<std::string, std::unique_ptr<CompiledRegion>>> idle_;
};

CompiledRegionPool& Pool() {
  static CompiledRegionPool* pool = new CompiledRegionPool();  // used until exit
  return *pool;
}

class RegionState : public CustomStatefulOp {
 public:
  // Takes ownership of `graph`; `json` is its text, the region's identity.
  RegionState(Graph* graph, std::string json) : graph_(graph), json_(std::move(json)) {}

  ~RegionState() override {
    if (compiled_) Pool().Give(json_, std::move(compiled_));
  }

  MXReturnValue Forward(std::vector<MXTensor>* inputs, std::vector<MXTensor>* outputs,
                        const OpResource&) override {
    return Guarded([&] {
      if (!compiled_) compiled_ = Pool().Take(json_, *inputs, *outputs);
      const std::string changed =
          compiled_ ? compiled_->Mismatch(*inputs, *outputs) : "the first forward";
      if (!changed.empty()) {
        if (std::getenv("MXNET_BNQ_REGION_VERBOSE") != nullptr) {
          std::cerr << "mxnet_bnq: compiling a region (" << changed << ")" << std::endl;
        }
        compiled_.reset();  // frees the old buffers first
        compiled_.reset(new CompiledRegion(*graph_, *inputs, *outputs));
      }
      compiled_->Run(*inputs, *outputs);
      return MX_SUCCESS;
    });
  }

 private:
  GraphPtr graph_;
  std::string json_;
  std::unique_ptr<CompiledRegion> compiled_;
};

MXReturnValue CreateRegionState(const std::unordered_map<std::string, std::string>& attrs,
                                const MXContext& ctx,
                                const std::vector<std::vector<unsigned int>>& in_shapes,
                                const std::vector<int> in_types, CustomStatefulOp** state) {
  return Guarded([&] {
    auto json = attrs.find(MX_STR_SUBGRAPH_SYM_JSON);
    if (json == attrs.end()) {
      ReportError(kRegionOp, "the node has no subgraph");
      return MX_FAIL;
    }
    GraphPtr graph(Graph::fromString(json->second));
    // A saved model edited by hand, or from another version: say which node.
    const std::vector<std::string> reasons = ClaimReasons(graph.get());
    for (size_t i = 0; i < graph->size(); ++i) {
      if (!reasons[i].empty() && graph->getNode(i)->op != "null") {
        ReportError(kRegionOp,
                    "node " + graph->getNode(i)->name + " cannot run in a region: " + reasons[i]);
        return MX_FAIL;
      }
    }
    *state = CustomStatefulOp::create<RegionState>(graph.release(), json->second);
    return MX_SUCCESS;
  });
}

MXReturnValue SupportedOps(const Graph* graph, std::vector<int>* ids,
                           const std::unordered_map<std::string, std::string>& options) {
  return Guarded([&] {
    const std::vector<std::string> reasons = ClaimReasons(graph);
    for (size_t i = 0; i < graph->size(); ++i) {
      if (reasons[i].empty()) (*ids)[i] = -1;  // any region
    }
    return MX_SUCCESS;
  });
}

MXReturnValue ReviewRegion(const Graph* subgraph, int subgraph_id, bool* accept,
                           const std::unordered_map<std::string, std::string>& options,
                           std::unordered_map<std::string, std::string>* attrs) {
  *accept = true;
  (*attrs)["__bnq_plugin__"] = "1";  // needs_plugin() finds saved regions
  return MX_SUCCESS;
}

}  // namespace
}  // namespace region
}  // namespace bnq

REGISTER_OP(_bnq_quantized_region)
    .setIsSubgraphOp()
    .setCreateOpState(bnq::region::CreateRegionState, "cpu");

REGISTER_PARTITIONER(BNQ_REGIONS)
    .addStrategy("regions", bnq::kRegionOp)
    .setSupportedOps("regions", bnq::region::SupportedOps)
    .setReviewSubgraph("regions", bnq::region::ReviewRegion);

// For mxnet_bnq.report: why each node of a graph (symbol JSON) would not be
// claimed, as a JSON object {node name: reason} of the unclaimed op nodes.
// The string stays valid until the next call on the same thread.
extern "C" __attribute__((visibility("default"))) const char* bnq_region_claim_report(
    const char* json) {
  static thread_local std::string result;
  try {
    bnq::region::GraphPtr graph(Graph::fromString(json));
    result = bnq::region::ClaimReportJson(graph.get());
  } catch (const std::exception& e) {
    result = std::string("{\"__error__\": \"") + e.what() + "\"}";
  }
  return result.c_str();
}
