// The BNQ_QUANTIZE rewrites of a network's head: BatchNorm + activation +
// global average pooling (or a mean over H and W) in one op that writes the
// mean in its own range, from int8 data, fp32 data, or a concat's parts.
#include "../number_parsing.h"
#include "../op_names.h"
#include "concat_parts.h"
#include "pooling_match.h"
#include "rewrite_support.h"
#include "rewrites.h"

namespace bnq {
namespace pass {

namespace {

// The pooled form of a quantized BatchNorm+ReLU or +act op (nullptr for
// others, and for a curve).
const char* PooledOp(const Node* bn) {
  if (bn->op == kQuantizedBatchNormReluOp) return kQuantizedBatchNormReluPoolOp;
  if (bn->op == kQuantizedBatchNormActOp && !HasCurve(bn)) return kQuantizedBatchNormActPoolOp;
  // The concat op after an activation (pooling a plain BatchNorm is not a head).
  if (bn->op == kQuantizedConcatBatchNormOp && !Attr(bn, "act_type").empty() && !HasCurve(bn)) {
    return kQuantizedConcatBatchNormPoolOp;
  }
  return nullptr;
}

// Makes pooled op `bn` the head in place of `mean` -> `quantize`: the
// quantize's range (calibrated on the mean), and MXNet's int8 flatten after
// it unless the mean keeps its dimensions ((N, C, 1, 1) -> (N, C); the
// flatten passes the range on).  Detaches `mean`.
void BecomeMeanHead(Graph* graph, Node* bn, Node* mean, Node* quantize, bool keepdims) {
  TakeRange(bn, quantize);
  NoteRewrite(bn, "mean_head");
  Node* out = bn;
  if (!keepdims) {
    out = graph->addNode(mean->name + "_flatten", kQuantizedFlatten);
    for (int i = 0; i < 3; ++i) SetInput(out, i, bn, i);
  }
  TakeOverOutputs(graph, quantize, out);
  DetachNode(mean);
}

// The head of a BatchNorm on fp32 data (e.g. after an fp32 pooling of an fp32
// Concat, which smart mode leaves fp32): BatchNorm -> a linear activation
// the ops fuse -> a mean over H and W (or a global average Pooling) ->
// quantize_v2, each the only reader of the one before.  Returns the
// quantize and sets `act`, `mean` and `keepdims`; nullptr if not that.
Node* MeanHeadAfterFp32BatchNorm(const Graph* graph, const PassOptions& options, Node* bn,
                                 Node** act, Node** mean, bool* keepdims) {
  if (bn->op != kBatchNorm || IsExcluded(options, bn) || bn->inputs.size() != 5 ||
      bn->inputs[0].node->op == kDequantize || !PoolsOverSpatialAxes(bn)) {
    return nullptr;
  }
  bool mean_var = false;
  if (!ParseBool(Attr(bn, "output_mean_var", "false"), &mean_var) || mean_var) return nullptr;
  *act = SoleConsumer(graph, bn, 3);
  std::unordered_map<std::string, std::string> fused;
  // Pooling a BatchNorm without an activation is not a head; a curve cannot be averaged in levels.
  if (*act == nullptr || !FusableActivation(*act, &fused) || IsExcluded(options, *act)) {
    return nullptr;
  }
  if (IsCurveType(fused.at("act_type"))) return nullptr;
  *mean = SoleConsumer(graph, *act, 1);
  if (*mean == nullptr || IsExcluded(options, *mean)) return nullptr;
  if (IsGlobalAvgPooling(*mean, "Pooling")) {
    *keepdims = true;
  } else if (!IsSpatialMean(graph, bn, *mean, keepdims)) {
    return nullptr;
  }
  Node* quantize = SoleConsumer(graph, *mean, 1);
  return quantize != nullptr && quantize->op == kQuantize && !IsExcluded(options, quantize)
             ? quantize
             : nullptr;
}

}  // namespace

// quantized_batch_norm_relu (_act) -> global average pooling  =>  one op.
void FuseGlobalAvgPooling(Graph* graph, const PassOptions& options) {
  for (Node* bn : NodesInOrder(graph)) {
    const char* pooled = PooledOp(bn);
    if (pooled == nullptr || IsExcluded(options, bn) || !PoolsOverSpatialAxes(bn)) continue;
    Node* pool = SoleConsumer(graph, bn, 1);
    if (pool == nullptr || !IsGlobalAvgPooling(pool) || IsExcluded(options, pool) ||
        !SoleReaderOfQuantizedOutput(graph, bn, pool)) {
      continue;
    }
    bn->op = pooled;
    // The op writes the mean in the range calibrated on the pooled output
    // (the classifier's input) when the flow collected it; else in the
    // BN+act range it has (and the mark names the pooling, not the act).
    bn->attrs.erase(kMissingReluRangeAttr);
    RangeFromOptions(options, pool->name, bn);
    NoteRewrite(bn, "global_avg_pool");
    TakeOverOutputs(graph, pool, bn);
  }
}

// quantized_batch_norm_relu (_act) -> dequantize -> mean(axis=(2, 3)) (or an
// fp32 global average Pooling) -> quantize_v2  =>  the pooled op
// [-> quantized_flatten], with the quantize's range (calibrated on the mean:
// the classifier's input).
void FuseMeanHead(Graph* graph, const PassOptions& options) {
  for (Node* bn : NodesInOrder(graph)) {
    const char* pooled = PooledOp(bn);
    if (pooled == nullptr || IsExcluded(options, bn) || !PoolsOverSpatialAxes(bn)) continue;
    Node* dequantize = SoleConsumer(graph, bn, 1);
    if (dequantize == nullptr || dequantize->op != kDequantize ||
        !SoleReaderOfQuantizedOutput(graph, bn, dequantize)) {
      continue;
    }
    Node* mean = SoleConsumer(graph, dequantize, 1);
    bool keepdims = false;
    if (mean == nullptr || IsExcluded(options, mean)) continue;
    if (IsGlobalAvgPooling(mean, "Pooling")) {  // gluon's GlobalAvgPool2D
      keepdims = true;
    } else if (!IsSpatialMean(graph, bn, mean, &keepdims)) {
      continue;
    }
    Node* quantize = SoleConsumer(graph, mean, 1);
    if (quantize == nullptr || quantize->op != kQuantize || IsExcluded(options, quantize)) {
      continue;
    }
    bn->op = pooled;
    bn->attrs.erase(kMissingReluRangeAttr);  // MXNet calibrates the quantize
    BecomeMeanHead(graph, bn, mean, quantize, keepdims);
    DetachNode(dequantize);
  }
}

// dequantize.. -> Concat [-> max or avg Pooling] -> BatchNorm -> act -> mean
//   -> quantize_v2  =>  [quantized_pooling..] ->
//   quantized_concat_[avg_pool_]batch_norm_global_avg_pool [-> quantized_flatten]
// A head after a concat that smart mode leaves fp32: the head reads the
// concat's quantized parts, each in its own range (a max pooling between
// pools each part in int8 first, PoolEachConcatPart: exact; an average
// pooling between, the op pools each part), with the quantize's range; no
// dequantize is left before the concat.
void QuantizeConcatMeanHead(Graph* graph, const PassOptions& options) {
  for (Node* bn : NodesInOrder(graph)) {
    Node *act = nullptr, *mean = nullptr;
    bool keepdims = false;
    Node* quantize = MeanHeadAfterFp32BatchNorm(graph, options, bn, &act, &mean, &keepdims);
    if (quantize == nullptr || bn->inputs[0].entry != 0) continue;
    Node* concat = bn->inputs[0].node;
    Node* avg_pool = nullptr;  // an average pooling between the concat and the head
    if (concat->op == "Pooling" && UseCount(graph, concat, 0) == 1 &&
        PoolEachConcatPart(graph, options, concat)) {
      concat = bn->inputs[0].node;  // the pooling's uses are the concat's now
    } else if (IsAvgPoolingBeforeBatchNorm(options, concat) && concat->inputs[0].entry == 0) {
      avg_pool = concat;
      concat = avg_pool->inputs[0].node;
    }
    std::vector<QuantizedPart> parts;
    if (IsExcluded(options, concat) || !DequantizedConcatParts(concat, &parts)) continue;
    BecomeFused(bn, act, kQuantizedOps);
    BecomeConcatBatchNorm(bn, parts);
    bn->op = kQuantizedConcatBatchNormPoolOp;
    NoteRewrite(bn, "quantized_fp32_bn");
    if (avg_pool != nullptr) {
      TakePoolingAttrs(bn, avg_pool);
      bn->op = kQuantizedConcatAvgPoolBatchNormPoolOp;
      NoteRewrite(bn, "avg_pool_in");
    }
    BecomeMeanHead(graph, bn, mean, quantize, keepdims);
    DetachNode(act);
    DetachIfUnused(graph, avg_pool != nullptr ? avg_pool : concat);
  }
}

// x (fp32) -> BatchNorm -> act -> mean(axis=(2, 3)) -> quantize_v2
//   =>  x -> batch_norm_act_global_avg_pool_quantize [-> quantized_flatten]
// with the quantize's range (calibrated on the mean): the mean of the exact
// BN+act values, as fp32 would take it, rounded once.  Without a calibrated
// range (calib_mode none) the input is quantized at run time instead:
//   =>  x -> quantize_v2 -> quantized_batch_norm_relu (_act)_global_avg_pool
void QuantizeFloatInputMeanHead(Graph* graph, const PassOptions& options) {
  for (Node* bn : NodesInOrder(graph)) {
    Node *act = nullptr, *mean = nullptr;
    bool keepdims = false;
    Node* quantize = MeanHeadAfterFp32BatchNorm(graph, options, bn, &act, &mean, &keepdims);
    if (quantize == nullptr) continue;
    std::unordered_map<std::string, std::string> fused;
    FusableActivation(act, &fused);
    bn->attrs[kFusedActivationAttr] = act->name;
    if (HasCalibratedRange(quantize)) {
      bn->op = kBatchNormActPoolQuantizeOp;
    } else {
      Node* input_quantize = RunTimeInputQuantize(graph, options, bn);
      SetInput(bn, 0, input_quantize, 0);
      SetInput(bn, 5, input_quantize, 1);
      SetInput(bn, 6, input_quantize, 2);
      bn->op = IsRelu(fused) ? kQuantizedBatchNormReluPoolOp : kQuantizedBatchNormActPoolOp;
    }
    if (bn->op != kQuantizedBatchNormReluPoolOp) {  // the _act ops take the activation
      for (const auto& kv : fused) bn->attrs[kv.first] = kv.second;
    }
    NoteRewrite(bn, "quantized_fp32_input_bn");
    NoteRewrite(bn, IsRelu(fused) ? "fused_relu" : "fused_" + fused.at("act_type"));
    BecomeMeanHead(graph, bn, mean, quantize, keepdims);
    DetachNode(act);
  }
}

}  // namespace pass
}  // namespace bnq
