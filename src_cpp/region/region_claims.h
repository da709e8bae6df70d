// Which nodes of a quantized graph the BNQ_REGIONS partitioner claims, and
// why it leaves each other node to MXNet.  One function for the partitioner,
// the region op's check of a loaded model and mxnet_bnq.report.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "mxnet/lib_api.h"

namespace bnq {
namespace region {

// Deletes a graph parsed by lib_api together with the nested subgraphs of its
// nodes, which lib_api's Graph destructor leaves allocated.
struct GraphDeleter {
  void operator()(mxnet::ext::Graph* graph) const;
};
using GraphPtr = std::unique_ptr<mxnet::ext::Graph, GraphDeleter>;

// Per node of `graph` (by index): "" when a region runs it, else the reason.
// Inputs ("null" nodes) get "input".
std::vector<std::string> ClaimReasons(const mxnet::ext::Graph* graph);

// {"node name": "reason", ...} for the op nodes not claimed.
std::string ClaimReportJson(const mxnet::ext::Graph* graph);

}  // namespace region
}  // namespace bnq
