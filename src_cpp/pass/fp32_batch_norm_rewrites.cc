// The BNQ_QUANTIZE rewrites of the BatchNorms MXNet's flow leaves fp32
// (between a dequantize and a quantize, on fp32 data, before fp32 ops), and
// of the fp32 poolings and flattens around them.
#include "../number_parsing.h"
#include "concat_parts.h"
#include "pooling_match.h"
#include "rewrite_support.h"
#include "rewrites.h"

namespace bnq {
namespace pass {

namespace {

// An average pooling whose BatchNorms the float-input op quantizes in a
// calibrated range (QuantizeFloatInputBatchNorm): left fp32, they read the
// unrounded mean.  MXNet's int8 average pooling rounds the mean again, in its
// input's range, and a BatchNorm amplifies that second rounding (a random
// LeakyReLU net lost 1.3 dB of logit SQNR); FuseAvgPoolingIntoBatchNorm then
// gives such a BatchNorm the pooling's int8 input.  Max pooling and Flatten
// commute with quantization: their int8 forms are exact.
bool BetterLeftFloat(const Graph* graph, const PassOptions& options, const Node* node) {
  if (node->op != "Pooling" || Attr(node, "pool_type", "max") != "avg") return false;
  bool any = false;
  for (const NodeEntry& use : ConsumersOf(node, 0)) {
    if (use.node->op != kBatchNorm) continue;  // e.g. a shortcut's quantize
    Node* act = nullptr;
    const Node* quantize = QuantizeAfterFp32BatchNorm(graph, options, use.node, &act);
    if (quantize == nullptr || !HasCalibratedRange(quantize)) return false;
    any = true;
  }
  return any;
}

}  // namespace

void QuantizeNeighbours(Graph* graph, const PassOptions& options) {
  for (Node* node : NodesInOrder(graph)) {
    const char* twin = QuantizedTwin(node);
    if (twin == nullptr || IsExcluded(options, node) || node->inputs.size() != 1 ||
        BetterLeftFloat(graph, options, node)) {
      continue;
    }
    // Only where the dequantize goes away: never more dequantize nodes.
    Node* dequantize = node->inputs[0].node;
    if (dequantize->op != kDequantize || node->inputs[0].entry != 0 ||
        UseCount(graph, dequantize, 0) != 1 || !LeadsToBatchNorm(node)) {
      continue;
    }
    const std::vector<NodeEntry> q = dequantize->inputs;  // copy: data, min, max
    Node* after = graph->addNode(node->name + "_dequantize", kDequantize);
    RedirectUses(graph, node, 0, after, 0);  // before `after` reads node
    for (int i = 0; i < 3; ++i) SetInput(node, i, q[i].node, q[i].entry);
    DetachNode(dequantize);
    node->op = twin;
    NoteRewrite(node, "quantized_neighbour");
    for (int i = 0; i < 3; ++i) SetInput(after, i, node, i);
  }
}

// dequantize -> BatchNorm [-> ReLU] -> quantize_v2  =>  one quantized op.
void QuantizeBetweenDequantizeAndQuantize(Graph* graph, const PassOptions& options) {
  for (Node* bn : NodesInOrder(graph)) {
    Node* act = nullptr;
    Node* quantize = QuantizeAfterFp32BatchNorm(graph, options, bn, &act);
    if (quantize == nullptr) continue;
    Node* dequantize = bn->inputs[0].node;
    if (dequantize->op != kDequantize || bn->inputs[0].entry != 0) continue;
    const std::vector<NodeEntry> q = dequantize->inputs;  // copy: data, min, max
    QuantizeBatchNorm(graph, bn, act, q[0], q[1], q[2], quantize, "quantized_fp32_bn");
    // A dequantize that other fp32 ops read stays for them.
    if (UseCount(graph, dequantize, 0) == 0) DetachNode(dequantize);
  }
}

// x (fp32) -> BatchNorm [-> ReLU] -> quantize_v2  =>  one op from fp32 to int8/uint8.
void QuantizeFloatInputBatchNorm(Graph* graph, const PassOptions& options) {
  for (Node* bn : NodesInOrder(graph)) {
    Node* act = nullptr;
    Node* quantize = QuantizeAfterFp32BatchNorm(graph, options, bn, &act);
    if (quantize == nullptr || bn->inputs[0].node->op == kDequantize) continue;
    if (HasCalibratedRange(quantize)) {
      // One op from fp32 data to the quantized output: exact, and one pass.
      TakeOverQuantize(graph, bn, act, quantize, kFloatInputOps, "quantized_fp32_input_bn");
    } else {
      // No range to quantize to: quantize the input at run time and derive
      // the output range from it.
      Node* input_quantize = RunTimeInputQuantize(graph, options, bn);
      QuantizeBatchNorm(graph, bn, act, {input_quantize, 0}, {input_quantize, 1},
                        {input_quantize, 2}, quantize, "quantized_fp32_input_bn");
    }
  }
}

// dequantize -> BatchNorm [-> act] -> fp32 ops (not a quantize: the network's
// fp32 tail, e.g. a mean before the classifier)
//   =>  quantized_batch_norm (_relu, _act) -> dequantize -> fp32 ops
// The dequantize moves after the BatchNorm; its range is the act's (or the
// BatchNorm's) output range, collected in the calibration run.
void QuantizeBeforeFloatOps(Graph* graph, const PassOptions& options) {
  for (Node* bn : NodesInOrder(graph)) {
    if (bn->op != kBatchNorm || IsExcluded(options, bn) || bn->inputs.size() != 5) continue;
    bool mean_var = false;
    if (!ParseBool(Attr(bn, "output_mean_var", "false"), &mean_var) || mean_var) continue;
    Node* dequantize = bn->inputs[0].node;
    if (bn->inputs[0].entry != 0 || UseCount(graph, bn, 1) != 0 || UseCount(graph, bn, 2) != 0) {
      continue;
    }
    // Or an fp32 Concat of dequantized parts (its other readers keep it).
    std::vector<QuantizedPart> parts;
    if (dequantize->op == kConcat) {
      if (IsExcluded(options, dequantize) || Attr(bn, "axis", "1") != "1" ||
          !DequantizedConcatParts(dequantize, &parts)) {
        continue;
      }
    } else if (dequantize->op != kDequantize || UseCount(graph, dequantize, 0) != 1) {
      continue;
    }
    Node* act = SoleConsumer(graph, bn, 3);
    if (act != nullptr && (!IsFusableActivation(act) || IsExcluded(options, act))) {
      act = nullptr;
    }
    Node* last = act != nullptr ? act : bn;
    bool feeds_quantize = false;
    for (const NodeEntry& use : ConsumersOf(last, 0)) feeds_quantize |= use.node->op == kQuantize;
    if (feeds_quantize) continue;  // the other rewrites' case
    Node* after = graph->addNode(bn->name + "_dequantize", kDequantize);
    RedirectUses(graph, last, 0, after, 0);  // before `after` reads bn
    NoteRewrite(bn, "quantized_before_fp32_ops");
    if (parts.empty()) {
      const std::vector<NodeEntry> q = dequantize->inputs;  // copy: data, min, max
      SetInput(bn, 0, q[0].node, q[0].entry);
      SetInput(bn, 5, q[1].node, q[1].entry);
      SetInput(bn, 6, q[2].node, q[2].entry);
      DetachNode(dequantize);
      BecomeFused(bn, act, kQuantizedOps);
    } else {
      BecomeFused(bn, act, kQuantizedOps);
      BecomeConcatBatchNorm(bn, parts);
      DetachIfUnused(graph, dequantize);
    }
    if (act != nullptr) DetachNode(act);
    RangeFromOptions(options, last->name, bn);
    for (int i = 0; i < 3; ++i) SetInput(after, i, bn, i);
  }
}

}  // namespace pass
}  // namespace bnq
