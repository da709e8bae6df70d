// The BNQ_QUANTIZE rewrites of average poolings: a BatchNorm after one takes
// it in (it reads the exact window means), and MXNet's int8 average pooling
// becomes the plugin's, which writes the mean in its own calibrated range.
#include "../op_names.h"
#include "../pooling_attrs.h"
#include "concat_parts.h"
#include "pooling_match.h"
#include "rewrite_support.h"
#include "rewrites.h"

namespace bnq {
namespace pass {

namespace {

// The quantized BatchNorm ops that may take an average pooling in.
bool TakesAvgPooling(const Node* bn) {
  const bool quantized = bn->op == kQuantizedBatchNormOp || bn->op == kQuantizedBatchNormReluOp ||
                         bn->op == kQuantizedBatchNormActOp || IsQuantizedHead(bn);
  const bool float_input = bn->op == kBatchNormQuantizeOp || bn->op == kBatchNormReluQuantizeOp ||
                           bn->op == kBatchNormActQuantizeOp ||
                           bn->op == kBatchNormActPoolQuantizeOp;
  return (quantized && bn->inputs.size() == 7) || (float_input && bn->inputs.size() == 5);
}

}  // namespace

// quantized avg pooling -> quantized_batch_norm (_relu, _act), or
// dequantize -> fp32 avg Pooling -> batch_norm_quantize (_relu, _act)
//   =>  quantized_avg_pool_batch_norm reading the pooling's quantized input
// The BatchNorm reads the exact mean, rounded once with it, instead of the
// mean rounded first (a BatchNorm amplifies that rounding) or kept fp32
// behind a dequantize.  The pooling stays for its other readers.
// An average pooling of a concat (MXNet's quantized one, or an fp32 Concat
// of dequantizes, which smart mode leaves fp32 before a BatchNorm it leaves
// fp32) pools each part instead, in its own range:
//   =>  quantized_concat_avg_pool_batch_norm reading the concat's parts.
void FuseAvgPoolingIntoBatchNorm(Graph* graph, const PassOptions& options) {
  for (Node* bn : NodesInOrder(graph)) {
    if (!TakesAvgPooling(bn) || IsExcluded(options, bn) || Attr(bn, "axis", "1") != "1") continue;
    Node* pool = bn->inputs[0].node;
    if (bn->inputs[0].entry != 0 || !IsAvgPoolingBeforeBatchNorm(options, pool)) continue;
    const bool float_input = bn->inputs.size() == 5;
    if (float_input != (pool->op == "Pooling")) continue;
    std::vector<QuantizedPart> parts;
    const bool of_concat =
        !IsExcluded(options, pool->inputs[0].node) && PooledConcatParts(pool, &parts);
    Node* source = pool;  // what holds the quantized input: the pooling or its dequantize
    if (float_input && !of_concat) {
      source = pool->inputs[0].node;
      if (source->op != kDequantize || source->inputs.size() != 3) continue;
    }
    const std::vector<NodeEntry> quantized = source->inputs;
    if (bn->op == kQuantizedBatchNormReluOp || bn->op == kBatchNormReluQuantizeOp ||
        bn->op == kQuantizedBatchNormReluPoolOp) {
      bn->attrs["act_type"] = "relu";
    }
    // A head (BatchNorm + act + mean) keeps its mean and the pooled range.
    const bool head = IsQuantizedHead(bn) || bn->op == kBatchNormActPoolQuantizeOp;
    TakePoolingAttrs(bn, pool);
    if (of_concat) {
      BecomeConcatBatchNorm(bn, parts);
      bn->op = head ? kQuantizedConcatAvgPoolBatchNormPoolOp : kQuantizedConcatAvgPoolBatchNormOp;
    } else {
      bn->op = head ? kQuantizedAvgPoolBatchNormPoolOp : kQuantizedAvgPoolBatchNormOp;
      for (int i = 0; i < 3; ++i) {
        SetInput(bn, i == 0 ? 0 : 4 + i, quantized[i].node, quantized[i].entry);
      }
    }
    NoteRewrite(bn, "avg_pool_in");
    DetachIfUnused(graph, pool);
  }
}

// quantized_pooling(avg)  =>  quantized_avg_pooling, with the range
// calibrated on the pooled output (from relu_calib_ranges by the pooling's
// name, else marked missing: the flow calibrates it in the same run).
void RequantizeAveragePooling(Graph* graph, const PassOptions& options) {
  for (Node* pool : NodesInOrder(graph)) {
    if (pool->op != kQuantizedPooling || Attr(pool, "pool_type", "max") != "avg" ||
        IsExcluded(options, pool) || pool->inputs.size() != 3) {
      continue;
    }
    PoolingAttrs parsed;
    std::string why;
    if (!ParsePoolingAttrs(pool->attrs, &parsed, &why)) continue;  // MXNet's op runs the rest
    pool->op = kQuantizedAvgPoolingOp;
    RangeFromOptions(options, pool->name, pool);
    NoteRewrite(pool, "own_range");
  }
}

}  // namespace pass
}  // namespace bnq
