#include "pooling_match.h"

#include <algorithm>

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

bool IsSpatialMean(const Node* node, bool* keepdims) {
  if (node->op != "mean" || node->inputs.size() != 1) return false;
  const int ndim = KnownNdim(node->inputs[0].node, node->inputs[0].entry);
  if (ndim != -1 && ndim != 4) return false;
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
