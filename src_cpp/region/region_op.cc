// The region subgraph op and the BNQ_REGIONS partitioner.
//
//   qsym.optimize_for('BNQ_REGIONS', qargs, qaux)
//
// claims maximal connected sets of the nodes a region can run (see
// region_node_attrs.h) and replaces each by one _bnq_quantized_region node.
// The op is stateful: its state, made once per bound executor, compiles the
// region at the first forward (when the parameters and input ranges are
// known) and again when an input's shape, a parameter or a range changes.
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "mxnet/lib_api.h"

#include "../error_reporting.h"
#include "../op_names.h"
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

class RegionState : public CustomStatefulOp {
 public:
  explicit RegionState(Graph* graph) : graph_(graph) {}  // takes ownership

  MXReturnValue Forward(std::vector<MXTensor>* inputs, std::vector<MXTensor>* outputs,
                        const OpResource&) override {
    return Guarded([&] {
      if (!compiled_ || !compiled_->Matches(*inputs, *outputs)) {
        compiled_.reset();  // frees the old buffers first
        compiled_.reset(new CompiledRegion(*graph_, *inputs, *outputs));
      }
      compiled_->Run(*inputs, *outputs);
      return MX_SUCCESS;
    });
  }

 private:
  std::unique_ptr<Graph> graph_;
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
    std::unique_ptr<Graph> graph(Graph::fromString(json->second));
    // A saved model edited by hand, or from another version: say which node.
    const std::vector<std::string> reasons = ClaimReasons(graph.get());
    for (size_t i = 0; i < graph->size(); ++i) {
      if (!reasons[i].empty() && graph->getNode(i)->op != "null") {
        ReportError(kRegionOp, "node " + graph->getNode(i)->name +
                                   " cannot run in a region: " + reasons[i]);
        return MX_FAIL;
      }
    }
    *state = CustomStatefulOp::create<RegionState>(graph.release());
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
    std::unique_ptr<Graph> graph(Graph::fromString(json));
    result = bnq::region::ClaimReportJson(graph.get());
  } catch (const std::exception& e) {
    result = std::string("{\"__error__\": \"") + e.what() + "\"}";
  }
  return result.c_str();
}
