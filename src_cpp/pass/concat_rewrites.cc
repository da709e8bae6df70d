// The BNQ_QUANTIZE rewrites around concatenations: a BatchNorm after a
// concat reads its parts, each in its own range, and a max pooling of a
// concat pools each part first.
#include "concat_parts.h"
#include "pooling_match.h"
#include "rewrite_support.h"
#include "rewrites.h"

namespace bnq {
namespace pass {

// quantized_concat -> quantized_pooling(max)
//   =>  quantized_pooling(max).. -> quantized_concat
// Max pooling works on each channel alone and commutes with the concat's
// rescaling (a monotone rounding): the same bits for every reader, and the
// BatchNorms after it then read the parts, each in its own range
// (FuseQuantizedConcat, the concat's dequantize read through).  Only where
// the pooling is the concat's one reader.
void PoolBeforeQuantizedConcat(Graph* graph, const PassOptions& options) {
  for (Node* pool : NodesInOrder(graph)) {
    if (pool->op != kQuantizedPooling || Attr(pool, "pool_type", "max") != "max" ||
        IsExcluded(options, pool) || pool->inputs.size() != 3) {
      continue;
    }
    Node* concat = pool->inputs[0].node;
    int n = 0;
    if (!IsChannelConcat(concat, kQuantizedConcat, &n) || IsExcluded(options, concat)) continue;
    bool sole_reader = true;
    for (int k = 0; k < 3; ++k) {
      sole_reader = sole_reader && pool->inputs[k].node == concat && pool->inputs[k].entry == k &&
                    UseCount(graph, concat, k) == 1;
    }
    if (!sole_reader) continue;
    const std::vector<NodeEntry> in = concat->inputs;  // copy: data.., then (min, max) pairs
    for (int i = 0; i < n; ++i) {
      Node* part = PoolingOfPart(graph, pool, i, {in[i], in[n + 2 * i], in[n + 2 * i + 1]});
      SetInput(concat, i, part, 0);
      SetInput(concat, n + 2 * i, part, 1);
      SetInput(concat, n + 2 * i + 1, part, 2);
    }
    DetachNode(pool);
    for (int k = 0; k < 3; ++k) RedirectUses(graph, pool, k, concat, k);
    NoteRewrite(concat, "pooled_parts");
  }
}

void PoolConcatParts(Graph* graph, const PassOptions& options) {
  for (Node* pool : NodesInOrder(graph)) {
    if (LeadsToBatchNorm(pool)) PoolEachConcatPart(graph, options, pool);
  }
}

// dequantize.. -> Concat -> BatchNorm [-> act] -> quantize_v2 (smart mode
// leaves a concat fp32 when its inputs are not all quantized ops' outputs)
//   =>  quantized_concat_batch_norm reading the dequantizes' inputs, with
//     the quantize's range.  The Concat stays for its other readers.
void QuantizeAfterFloatConcat(Graph* graph, const PassOptions& options) {
  for (Node* bn : NodesInOrder(graph)) {
    Node* act = nullptr;
    Node* quantize = QuantizeAfterFp32BatchNorm(graph, options, bn, &act);
    if (quantize == nullptr || bn->inputs[0].entry != 0 || Attr(bn, "axis", "1") != "1") continue;
    Node* concat = bn->inputs[0].node;
    std::vector<QuantizedPart> parts;
    if (IsExcluded(options, concat) || !DequantizedConcatParts(concat, &parts)) continue;
    TakeOverQuantize(graph, bn, act, quantize, kQuantizedOps, "quantized_fp32_bn");
    BecomeConcatBatchNorm(bn, parts);
    DetachIfUnused(graph, concat);
  }
}

// quantized_concat -> quantized_batch_norm (_relu, _act)
//   =>  quantized_concat_batch_norm reading the concat's parts.
void FuseQuantizedConcat(Graph* graph, const PassOptions& options) {
  for (Node* bn : NodesInOrder(graph)) {
    if (!ReadsConcatParts(bn) || IsExcluded(options, bn) || bn->inputs.size() != 7) continue;
    Node* concat = bn->inputs[0].node;
    int n = 0;
    if (bn->inputs[0].entry != 0 || !IsChannelConcat(concat, kQuantizedConcat, &n) ||
        bn->inputs[5].node != concat || bn->inputs[5].entry != 1 || bn->inputs[6].node != concat ||
        bn->inputs[6].entry != 2 || IsExcluded(options, concat)) {
      continue;
    }
    std::vector<QuantizedPart> parts;
    QuantizedConcatParts(concat, &parts);
    BecomeConcatBatchNorm(bn, parts);
    DetachIfUnused(graph, concat);
  }
}

}  // namespace pass
}  // namespace bnq
