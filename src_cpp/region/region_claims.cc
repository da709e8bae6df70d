#include "region_claims.h"

#include <map>

#include "../number_parsing.h"
#include "region_node_attrs.h"

namespace bnq {
namespace region {
namespace {

using mxnet::ext::Graph;
using mxnet::ext::Node;

bool Flag(const Node* n, const char* key) {
  auto it = n->attrs.find(key);
  bool v = false;
  return it != n->attrs.end() && ParseBool(it->second, &v) && v;
}

// The input index of the sum operand of an MXNet fused convolution with_sum
// (whether or not a region could run it), or -1.
int SumInput(const Node* n) {
  if (n->op != "_sg_mkldnn_conv" || !Flag(n, "with_sum") || n->subgraphs.size() != 1) return -1;
  bool no_bias = false;
  for (size_t i = 0; i < n->subgraphs[0]->size(); ++i) {
    const Node* inner = n->subgraphs[0]->getNode(i);
    if (inner->op == "Convolution") no_bias = Flag(inner, "no_bias");
  }
  return 2 + (no_bias ? 0 : 1) + (Flag(n, "with_bn") ? 4 : 0);
}

std::string Escaped(const std::string& s) {
  std::string out;
  for (char ch : s) {
    if (ch == '"' || ch == '\\') out += '\\';
    if (static_cast<unsigned char>(ch) < 0x20) continue;
    out += ch;
  }
  return out;
}

}  // namespace

void GraphDeleter::operator()(Graph* graph) const {
  for (size_t i = 0; i < graph->size(); ++i) {
    for (Graph* sub : graph->getNode(i)->subgraphs) (*this)(sub);
  }
  delete graph;
}

std::vector<std::string> ClaimReasons(const Graph* graph) {
  const size_t n = graph->size();
  std::vector<std::string> reasons(n);
  std::map<const Node*, size_t> index;
  // Claimed nodes whose output range a region measures at run time: an
  // uncalibrated quantize or requantize, and what derives its range from one.
  std::vector<bool> run_time(n, false);
  for (size_t i = 0; i < n; ++i) {  // inputs before their consumers
    const Node* node = graph->getNode(i);
    index[node] = i;
    if (node->op == "null") {
      reasons[i] = "input";
      continue;
    }
    RegionNode parsed;
    std::string why;
    if (!ParseRegionNode(node, &parsed, &why)) {
      reasons[i] = why;
      continue;
    }
    const Node* measured_by = nullptr;
    for (const auto& e : node->inputs) {
      if (run_time[index[e.node]]) measured_by = e.node;
    }
    const bool calibrated_conv = parsed.kind == OpKind::kConv && parsed.conv.calibrated;
    if (measured_by != nullptr && (calibrated_conv || parsed.kind == OpKind::kFullyConnected)) {
      // MXNet quantizes such an op's weights for its input range, again
      // whenever that changes.
      reasons[i] = "its input range is measured at run time (by " + measured_by->name +
                   ") and it needs a constant one";
      continue;
    }
    const bool measures =
        (parsed.kind == OpKind::kQuantize || parsed.kind == OpKind::kRequantize) &&
        !parsed.quantize.calibrated;
    run_time[i] = parsed.kind != OpKind::kDequantize && (measures || measured_by != nullptr);
  }
  // MXNet 1.9.1's fused convolution with_sum computes wrong results when its
  // sum operand is a library op's (plain) output: never end a region there.
  bool changed = true;
  while (changed) {
    changed = false;
    for (size_t i = 0; i < n; ++i) {
      const Node* node = graph->getNode(i);
      const int sum = SumInput(node);
      if (reasons[i].empty() || sum < 0 || sum >= static_cast<int>(node->inputs.size())) continue;
      const size_t producer = index[node->inputs[sum].node];
      if (reasons[producer].empty()) {
        reasons[producer] = "its output is the sum operand of " + node->name +
                            ", which MXNet runs (MXNet's fused sum is wrong on a library op's "
                            "output): " +
                            reasons[i];
        changed = true;
      }
    }
  }
  return reasons;
}

std::string ClaimReportJson(const Graph* graph) {
  const std::vector<std::string> reasons = ClaimReasons(graph);
  std::string out = "{";
  for (size_t i = 0; i < graph->size(); ++i) {
    const Node* node = graph->getNode(i);
    if (node->op == "null" || reasons[i].empty()) continue;
    if (out.size() > 1) out += ", ";
    out += "\"" + Escaped(node->name) + "\": \"" + Escaped(reasons[i]) + "\"";
  }
  return out + "}";
}

}  // namespace region
}  // namespace bnq
