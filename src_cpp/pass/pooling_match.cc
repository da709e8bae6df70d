#include "pooling_match.h"

#include <algorithm>
#include <cstdint>
#include <vector>

#include "../number_parsing.h"
#include "../op_names.h"
#include "../pooling_attrs.h"
#include "rewrite_support.h"

namespace bnq {
namespace pass {

namespace {

// The number of dimensions of output `entry` of `node` from the shapes MXNet
// infers before the pass when the flow gives it the data shapes
// (MX_STR_SHAPE); -1 when unknown.
int KnownNdim(const Node* node, int entry, int depth = 0) {
  const auto it = node->attrs.find(MX_STR_SHAPE);
  if (it == node->attrs.end()) {
    // A node this pass made (e.g. a dequantize after a BatchNorm it
    // quantized) has no shape: that of its data input, for the ops that keep it.
    const bool keeps_shape = node->op == kDequantize || node->op == kQuantize ||
                             node->op == kBatchNorm || IsFusableActivation(node) ||
                             (IsPluginOp(node->op) && !IsConcatBatchNormOp(node->op) &&
                              node->op.find("pool") == std::string::npos);
    if (!keeps_shape || node->inputs.empty() || depth > 8) return -1;
    return KnownNdim(node->inputs[0].node, node->inputs[0].entry, depth + 1);
  }
  const std::string shape = mxnet::ext::getShapeAt(it->second, entry);
  if (shape.size() < 2 || shape.find("None") != std::string::npos) return -1;
  if (shape == "[]") return 0;
  return static_cast<int>(std::count(shape.begin(), shape.end(), ',')) + 1;
}

// The number of channels of the BatchNorm `bn` (fp32 or a plugin op) from
// its gamma array handed to the pass; -1 if unknown.
int64_t ChannelsOf(const Node* bn) {
  int gamma = 1;
  if (!GammaInput(bn, &gamma) || gamma < 1 || static_cast<size_t>(gamma) >= bn->inputs.size())
    return -1;
  const Node* param = bn->inputs[gamma].node;
  if (param->op != "null" || param->tensor == nullptr || param->tensor->shape.size() != 1) {
    return -1;
  }
  return param->tensor->shape[0];
}

// The number of values per sample that the classifier reading output 0 of
// `node` alone (through quantizes and flattens) takes: the second dimension
// of the weight of a fully connected op that flattens its input; -1 if no
// such op reads it, or its weight is unknown.
int64_t ClassifierInputs(const Graph* graph, const Node* node, int depth = 0) {
  const std::vector<NodeEntry> uses = ConsumersOf(node, 0);
  if (depth > 4 || uses.size() != 1 || IsGraphOutput(graph, node, 0)) return -1;
  const Node* next = uses[0].node;
  if (next->op == kQuantize || next->op == kQuantizedFlatten || next->op == "Flatten" ||
      next->op == "flatten") {
    return ClassifierInputs(graph, next, depth + 1);
  }
  const Node* fc = next;  // the node with the FullyConnected attributes
  if (next->op == "_sg_mkldnn_fully_connected") {
    fc = nullptr;
    for (size_t i = 0; next->subgraphs.size() == 1 && i < next->subgraphs[0]->size(); ++i) {
      const Node* inner = next->subgraphs[0]->getNode(i);
      if (inner->op == "FullyConnected") fc = inner;
    }
  } else if (next->op != "FullyConnected" && next->op != "_contrib_quantized_fully_connected") {
    return -1;
  }
  bool flatten = true;
  if (fc == nullptr || uses[0].entry != 0 || next->inputs.size() < 2 ||
      !ParseBool(Attr(fc, "flatten", "true"), &flatten) || !flatten) {
    return -1;
  }
  const Node* weight = next->inputs[1].node;
  if (weight->op != "null" || weight->tensor == nullptr || weight->tensor->shape.size() != 2) {
    return -1;
  }
  return weight->tensor->shape[1];
}

}  // namespace

const char* QuantizedTwin(const Node* node) {
  if (node->op == "Flatten" || node->op == "flatten") return kQuantizedFlatten;
  if (node->op != "Pooling") return nullptr;
  const std::string type = Attr(node, "pool_type", "max");
  const std::string layout = Attr(node, "layout", "None");
  const std::string kernel = Attr(node, "kernel", "()");
  bool global = false;
  const bool planar = std::count(kernel.begin(), kernel.end(), ',') == 1 ||
                      (ParseBool(Attr(node, "global_pool", "false"), &global) && global);
  return (type == "max" || type == "avg") && (layout == "None" || layout == "NCHW") && planar
             ? kQuantizedPooling
             : nullptr;
}

bool LeadsToBatchNorm(const Node* node, int depth) {
  if (depth > 16) return false;
  for (const NodeEntry& use : ConsumersOf(node, 0)) {
    const Node* next = use.node;
    if (next->op == kBatchNorm ||
        (QuantizedTwin(next) != nullptr && LeadsToBatchNorm(next, depth + 1))) {
      return true;
    }
  }
  return false;
}

bool PoolsOverSpatialAxes(const Node* bn) { return Attr(bn, "axis", "1") == "1"; }

bool IsGlobalAvgPooling(const Node* node, const char* op) {
  bool global = false;
  const std::string layout = Attr(node, "layout", "None");
  return node->op == op && Attr(node, "pool_type", "max") == "avg" &&
         ParseBool(Attr(node, "global_pool", "false"), &global) && global &&
         (layout == "None" || layout == "NCW" || layout == "NCHW" || layout == "NCDHW");
}

bool IsSpatialMean(const Graph* graph, const Node* bn, const Node* node, bool* keepdims) {
  if (node->op != "mean" || node->inputs.size() != 1) return false;
  const int ndim = KnownNdim(node->inputs[0].node, node->inputs[0].entry);
  if (ndim != -1 && ndim != 4) return false;
  if (ndim == -1) {
    // Without the shapes: where the classifier after it takes one value per
    // channel, the mean leaves nothing but the channels, as the pooled op.
    const int64_t channels = ChannelsOf(bn);
    if (channels <= 0 || ClassifierInputs(graph, node) != channels) return false;
  }
  std::string axis = Attr(node, "axis");
  axis.erase(std::remove(axis.begin(), axis.end(), ' '), axis.end());
  bool exclude = false;
  *keepdims = false;
  return (axis == "(2,3)" || axis == "[2,3]") &&
         ParseBool(Attr(node, "exclude", "false"), &exclude) && !exclude &&
         ParseBool(Attr(node, "keepdims", "false"), keepdims);
}

bool IsAvgPoolingBeforeBatchNorm(const PassOptions& options, const Node* pool) {
  if ((pool->op != kQuantizedPooling && pool->op != kQuantizedAvgPoolingOp &&
       pool->op != "Pooling") ||
      Attr(pool, "pool_type", pool->op == kQuantizedAvgPoolingOp ? "avg" : "max") != "avg" ||
      IsExcluded(options, pool)) {
    return false;
  }
  // 2-D only: a global pooling's kernel and layout say how many dimensions
  // it pools (GlobalAvgPool1D/3D), which ParsePoolingAttrs does not check.
  const std::string kernel = Attr(pool, "kernel", "()");
  const std::string layout = Attr(pool, "layout", "None");
  if (std::count(kernel.begin(), kernel.end(), ',') != 1 ||
      (layout != "None" && layout != "NCHW")) {
    return false;
  }
  // MXNet's fp32 pooling (its own kernel there, not oneDNN) averages the
  // windows that the full convention adds at the edge over fewer values than
  // oneDNN's padded ones; its int8 pooling and the plugin's agree with oneDNN.
  if (pool->op == "Pooling" && Attr(pool, "pooling_convention", "valid") != "valid") return false;
  PoolingAttrs parsed;
  std::string why;
  return ParsePoolingAttrs(pool->attrs, &parsed, &why);
}

void TakePoolingAttrs(Node* bn, const Node* pool) {
  for (const char* key : {"kernel", "stride", "pad", "global_pool", "pooling_convention",
                          "count_include_pad", "layout"}) {
    const std::string value = Attr(pool, key);
    if (!value.empty()) bn->attrs[key] = value;
  }
  bn->attrs["pool_type"] = "avg";
}

}  // namespace pass
}  // namespace bnq
