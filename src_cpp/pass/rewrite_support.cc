#include "rewrite_support.h"

#include <cstdio>

#include "../batch_norm_attrs.h"
#include "../number_parsing.h"
#include "../op_names.h"

namespace bnq {
namespace pass {

std::string Attr(const Node* node, const std::string& key, const std::string& fallback) {
  auto it = node->attrs.find(key);
  return it == node->attrs.end() ? fallback : it->second;
}

void NoteRewrite(Node* node, const std::string& rewrite) {
  const std::string before = Attr(node, kRewriteAttr);
  node->attrs[kRewriteAttr] = before.empty() ? rewrite : before + "+" + rewrite;
}

void TakeOverOutputs(Graph* graph, Node* from, Node* to) {
  for (int i = 0; i < 3; ++i) RedirectUses(graph, from, i, to, i);
  DetachNode(from);
}

bool IsExcluded(const PassOptions& options, const Node* node) {
  return options.excluded_sym_names.count(node->name) > 0 ||
         options.excluded_op_names.count(node->op) > 0;
}

Node* SoleConsumer(const Graph* graph, const Node* node, int num_outputs) {
  if (UseCount(graph, node, 0) != 1 || IsGraphOutput(graph, node, 0)) return nullptr;
  for (int i = 1; i < num_outputs; ++i) {
    if (UseCount(graph, node, i) != 0) return nullptr;
  }
  return ConsumersOf(node, 0)[0].node;
}

bool SoleReaderOfQuantizedOutput(const Graph* graph, const Node* producer, const Node* node) {
  if (node->inputs.size() != 3) return false;
  for (int i = 0; i < 3; ++i) {
    if (node->inputs[i].node != producer || node->inputs[i].entry != i ||
        UseCount(graph, producer, i) != 1) {
      return false;
    }
  }
  return true;
}

void DetachIfUnused(const Graph* graph, Node* node) {
  for (int i = 0; i < 3; ++i) {
    if (UseCount(graph, node, i) != 0) return;
  }
  std::vector<Node*> inputs;
  for (const NodeEntry& e : node->inputs) inputs.push_back(e.node);
  DetachNode(node);
  for (Node* in : inputs) {
    if (in->op == kQuantizedConcat || in->op == kConcat || in->op == kDequantize) {
      DetachIfUnused(graph, in);
    }
  }
}

std::string FloatString(float v) {
  char buf[32];
  snprintf(buf, sizeof(buf), "%.9g", v);
  return buf;
}

bool HasCalibratedRange(const Node* quantize) {
  double lo = 0, hi = 0;
  return ParseDecimal(Attr(quantize, "min_calib_range"), &lo) &&
         ParseDecimal(Attr(quantize, "max_calib_range"), &hi);
}

void TakeRange(Node* bn, const Node* quantize) {
  for (const char* key : {"min_calib_range", "max_calib_range"}) {
    const std::string value = Attr(quantize, key);
    if (value.empty()) {
      bn->attrs.erase(key);
    } else {
      bn->attrs[key] = value;
    }
  }
}

void RangeFromOptions(const PassOptions& options, const std::string& key, Node* bn) {
  auto range = options.relu_calib_ranges.find(key);
  if (range != options.relu_calib_ranges.end()) {
    bn->attrs["min_calib_range"] = FloatString(range->second.first);
    bn->attrs["max_calib_range"] = FloatString(range->second.second);
  } else {
    // Marked with the node whose output range is missing, so that a flow
    // knows which layer outputs to calibrate.
    bn->attrs[kMissingReluRangeAttr] = key;
  }
}

Node* RunTimeInputQuantize(Graph* graph, const PassOptions& options, const Node* bn) {
  Node* input_quantize = graph->addNode(bn->name + "_data_quantize", kQuantize);
  input_quantize->attrs["out_type"] =
      options.quantized_dtype == "uint8" ? "auto" : options.quantized_dtype;
  const NodeEntry data = bn->inputs[0];
  SetInput(input_quantize, 0, data.node, data.entry);
  return input_quantize;
}

bool FusableActivation(const Node* node, std::unordered_map<std::string, std::string>* act) {
  act->clear();
  const std::string op = node->op;
  const std::string act_type = Attr(node, "act_type");
  if (op == "Activation" && (act_type == "relu" || act_type == "sigmoid" || act_type == "tanh" ||
                             act_type == "softrelu")) {
    (*act)["act_type"] = act_type;
  } else if (op == "relu" || op == "sigmoid" || op == "tanh") {
    (*act)["act_type"] = op;
  } else if (op == "clip" && !Attr(node, "a_min").empty() && !Attr(node, "a_max").empty()) {
    *act = {{"act_type", "clip"}, {"a_min", Attr(node, "a_min")}, {"a_max", Attr(node, "a_max")}};
  } else if (op == "LeakyReLU" && Attr(node, "act_type", "leaky") == "leaky") {
    *act = {{"act_type", "leaky"}, {"slope", Attr(node, "slope", "0.25")}};
  } else if (op == "LeakyReLU" && act_type == "gelu") {
    (*act)["act_type"] = "gelu";
  }
  return !act->empty();
}

bool IsCurveType(const std::string& act_type) {
  FusedActivation act;
  act.kind = ActivationKind(act_type);
  return IsCurve(act);
}

bool HasCurve(const Node* bn) { return IsCurveType(Attr(bn, "act_type")); }

bool IsFusableActivation(const Node* node) {
  std::unordered_map<std::string, std::string> act;
  return FusableActivation(node, &act);
}

bool IsRelu(const std::unordered_map<std::string, std::string>& act) {
  return act.at("act_type") == "relu";
}

void BecomeFused(Node* bn, const Node* act_node, const FusedOps& ops) {
  std::unordered_map<std::string, std::string> act;
  if (act_node == nullptr || !FusableActivation(act_node, &act)) {
    bn->op = ops.plain;
    return;
  }
  bn->op = IsRelu(act) ? ops.relu : ops.act;
  if (!IsRelu(act)) {
    for (const auto& kv : act) bn->attrs[kv.first] = kv.second;
  }
  NoteRewrite(bn, IsRelu(act) ? "fused_relu" : "fused_" + act.at("act_type"));
  bn->attrs[kFusedActivationAttr] = act_node->name;
}

Node* QuantizeAfterFp32BatchNorm(const Graph* graph, const PassOptions& options, Node* bn,
                                 Node** act) {
  *act = nullptr;
  if (bn->op != kBatchNorm || IsExcluded(options, bn) || bn->inputs.size() != 5) return nullptr;
  bool mean_var = false;
  if (!ParseBool(Attr(bn, "output_mean_var", "false"), &mean_var) || mean_var) return nullptr;
  Node* next = SoleConsumer(graph, bn, 3);
  if (next != nullptr && IsFusableActivation(next) && !IsExcluded(options, next)) {
    *act = next;
    next = SoleConsumer(graph, next, 1);
  }
  return next != nullptr && next->op == kQuantize ? next : nullptr;
}

void TakeOverQuantize(Graph* graph, Node* bn, Node* act, Node* quantize, const FusedOps& ops,
                      const char* rewrite) {
  // The quantize after an activation was calibrated on its output, as the fused op needs.
  NoteRewrite(bn, rewrite);
  BecomeFused(bn, act, ops);
  TakeRange(bn, quantize);
  TakeOverOutputs(graph, quantize, bn);
  if (act != nullptr) DetachNode(act);
}

void QuantizeBatchNorm(Graph* graph, Node* bn, Node* act, const NodeEntry data, const NodeEntry min,
                       const NodeEntry max, Node* quantize, const char* rewrite) {
  SetInput(bn, 0, data.node, data.entry);
  SetInput(bn, 5, min.node, min.entry);
  SetInput(bn, 6, max.node, max.entry);
  TakeOverQuantize(graph, bn, act, quantize, kQuantizedOps, rewrite);
}

bool IsQuantizedHead(const Node* bn) {
  return bn->op == kQuantizedBatchNormReluPoolOp || bn->op == kQuantizedBatchNormActPoolOp;
}

bool GammaInput(const Node* bn, int* index) {
  *index = 1;
  return !IsConcatBatchNormOp(bn->op) || ParseInteger(Attr(bn, "num_args"), index);
}

}  // namespace pass
}  // namespace bnq
