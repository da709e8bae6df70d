// The BNQ_QUANTIZE rewrites that fuse the activation after a quantized
// BatchNorm: the fp32 one MXNet leaves behind a dequantize (it quantizes only
// the ReLU), and MXNet's quantized ReLU.
#include "../op_names.h"
#include "pooling_match.h"
#include "rewrite_support.h"
#include "rewrites.h"

namespace bnq {
namespace pass {

// quantized_batch_norm -> dequantize -> act -> quantize_v2  =>  one op.
// The activation of a head (a linear one before a mean over H and W, or an
// fp32 global average Pooling, that feeds a quantize, as quantize_mode='full'
// leaves a head) goes into the op too, its range the activation's:
//   quantized_batch_norm -> dequantize -> act -> mean -> quantize_v2
//     =>  quantized_batch_norm_act -> dequantize -> mean -> quantize_v2
// which FuseMeanHead then makes one pooled op.
void FuseDequantizedActivation(Graph* graph, const PassOptions& options) {
  for (Node* bn : NodesInOrder(graph)) {
    if (bn->op != kQuantizedBatchNormOp || IsExcluded(options, bn)) continue;
    Node* dequantize = SoleConsumer(graph, bn, 1);
    if (dequantize == nullptr || dequantize->op != kDequantize ||
        !SoleReaderOfQuantizedOutput(graph, bn, dequantize)) {
      continue;
    }
    Node* act = SoleConsumer(graph, dequantize, 1);
    if (act == nullptr || !IsFusableActivation(act) || IsExcluded(options, act)) continue;
    Node* quantize = SoleConsumer(graph, act, 1);
    if (quantize == nullptr || IsExcluded(options, quantize)) continue;
    bool keepdims = false;
    if (options.fuse_pooling && PoolsOverSpatialAxes(bn) &&
        (IsGlobalAvgPooling(quantize, "Pooling") ||
         IsSpatialMean(graph, bn, quantize, &keepdims))) {
      Node* mean = quantize;
      Node* after = SoleConsumer(graph, mean, 1);
      std::unordered_map<std::string, std::string> fused;
      FusableActivation(act, &fused);
      // A curve cannot be averaged in levels: that is no head the ops take.
      if (after == nullptr || after->op != kQuantize || IsExcluded(options, after) ||
          IsCurveType(fused.at("act_type"))) {
        continue;
      }
      BecomeFused(bn, act, kQuantizedOps);
      RangeFromOptions(options, act->name, bn);
      SetInput(mean, 0, dequantize, 0);
      DetachNode(act);
      continue;
    }
    if (quantize->op != kQuantize) continue;
    BecomeFused(bn, act, kQuantizedOps);
    TakeRange(bn, quantize);  // calibrated on the activation's output
    TakeOverOutputs(graph, quantize, bn);
    DetachNode(act);
    DetachNode(dequantize);
  }
}

// quantized_batch_norm -> quantized_act(relu)  =>  quantized_batch_norm_relu.
void FuseBatchNormRelu(Graph* graph, const PassOptions& options) {
  for (Node* bn : NodesInOrder(graph)) {
    if (bn->op != kQuantizedBatchNormOp || IsExcluded(options, bn)) continue;
    Node* act = SoleConsumer(graph, bn, 1);
    if (act == nullptr || act->op != kQuantizedAct || Attr(act, "act_type") != "relu" ||
        IsExcluded(options, act) || !SoleReaderOfQuantizedOutput(graph, bn, act)) {
      continue;
    }
    bn->op = kQuantizedBatchNormReluOp;
    // Without the post-ReLU range the op uses [0, max_calib_range] of the
    // pre-ReLU calibration, or derives its range at run time.
    RangeFromOptions(options, act->name, bn);
    NoteRewrite(bn, "fused_relu");
    bn->attrs[kFusedActivationAttr] = act->name;
    TakeOverOutputs(graph, act, bn);
  }
}

}  // namespace pass
}  // namespace bnq
