#include "concat_parts.h"

#include "../number_parsing.h"
#include "../op_names.h"
#include "pooling_match.h"
#include "rewrite_support.h"

namespace bnq {
namespace pass {

bool IsChannelConcat(const Node* node, const char* op, int* num_args) {
  if (node->op != op || Attr(node, "dim", "1") != "1") return false;
  return ParseInteger(Attr(node, "num_args"), num_args) && *num_args >= 1 &&
         static_cast<int>(node->inputs.size()) == (op == kConcat ? 1 : 3) * *num_args;
}

void QuantizedConcatParts(const Node* concat, std::vector<QuantizedPart>* parts, int depth) {
  int n = 0;
  IsChannelConcat(concat, kQuantizedConcat, &n);
  for (int i = 0; i < n; ++i) {
    const QuantizedPart part{concat->inputs[i], concat->inputs[n + 2 * i],
                             concat->inputs[n + 2 * i + 1]};
    const Node* inner = part.data.node;
    int unused = 0;
    if (depth < 64 && part.data.entry == 0 && IsChannelConcat(inner, kQuantizedConcat, &unused) &&
        part.min.node == inner && part.min.entry == 1 && part.max.node == inner &&
        part.max.entry == 2) {
      QuantizedConcatParts(inner, parts, depth + 1);
    } else {
      parts->push_back(part);
    }
  }
}

void PartsOfDequantize(const Node* dequantize, std::vector<QuantizedPart>* parts) {
  const std::vector<NodeEntry>& q = dequantize->inputs;
  int unused = 0;
  if (q[0].entry == 0 && IsChannelConcat(q[0].node, kQuantizedConcat, &unused) &&
      q[1].node == q[0].node && q[1].entry == 1 && q[2].node == q[0].node && q[2].entry == 2) {
    QuantizedConcatParts(q[0].node, parts);
  } else {
    parts->push_back({q[0], q[1], q[2]});
  }
}

bool DequantizedConcatParts(const Node* concat, std::vector<QuantizedPart>* parts, int depth) {
  int n = 0;
  if (depth > 64 || !IsChannelConcat(concat, kConcat, &n)) return false;
  for (int i = 0; i < n; ++i) {
    const Node* in = concat->inputs[i].node;
    if (concat->inputs[i].entry != 0) return false;
    if (in->op == kDequantize && in->inputs.size() == 3) {
      PartsOfDequantize(in, parts);
    } else if (!DequantizedConcatParts(in, parts, depth + 1)) {
      return false;
    }
  }
  return true;
}

bool PooledConcatParts(const Node* pool, std::vector<QuantizedPart>* parts) {
  const NodeEntry& in = pool->inputs[0];
  if (in.entry != 0) return false;
  if (pool->op == "Pooling") return DequantizedConcatParts(in.node, parts);
  int n = 0;
  if (pool->inputs.size() != 3 || !IsChannelConcat(in.node, kQuantizedConcat, &n) ||
      pool->inputs[1].node != in.node || pool->inputs[1].entry != 1 ||
      pool->inputs[2].node != in.node || pool->inputs[2].entry != 2) {
    return false;
  }
  QuantizedConcatParts(in.node, parts);
  return true;
}

void BecomeConcatBatchNorm(Node* bn, const std::vector<QuantizedPart>& parts) {
  const std::vector<NodeEntry> params(bn->inputs.begin() + 1, bn->inputs.begin() + 5);
  DetachNode(bn);
  for (const QuantizedPart& p : parts) SetInput(bn, bn->inputs.size(), p.data.node, p.data.entry);
  for (const NodeEntry& p : params) SetInput(bn, bn->inputs.size(), p.node, p.entry);
  for (const QuantizedPart& p : parts) {
    SetInput(bn, bn->inputs.size(), p.min.node, p.min.entry);
    SetInput(bn, bn->inputs.size(), p.max.node, p.max.entry);
  }
  const bool pooled = IsQuantizedHead(bn);
  if (bn->op == kQuantizedBatchNormReluOp || bn->op == kQuantizedBatchNormReluPoolOp) {
    bn->attrs["act_type"] = "relu";
  }
  bn->op = pooled ? kQuantizedConcatBatchNormPoolOp : kQuantizedConcatBatchNormOp;
  bn->attrs["num_args"] = std::to_string(parts.size());
  bn->attrs["dim"] = "1";
  NoteRewrite(bn, "concat_batch_norm");
}

bool ReadsConcatParts(const Node* bn) {
  return (bn->op == kQuantizedBatchNormOp || bn->op == kQuantizedBatchNormReluOp ||
          bn->op == kQuantizedBatchNormActOp || IsQuantizedHead(bn)) &&
         Attr(bn, "axis", "1") == "1";
}

Node* PoolingOfPart(Graph* graph, const Node* pool, size_t i, const QuantizedPart& part) {
  Node* node = graph->addNode(pool->name + "_part" + std::to_string(i), kQuantizedPooling);
  node->attrs = pool->attrs;
  node->attrs.erase(kRewriteAttr);
  NoteRewrite(node, "pooled_concat_part");
  SetInput(node, 0, part.data.node, part.data.entry);
  SetInput(node, 1, part.min.node, part.min.entry);
  SetInput(node, 2, part.max.node, part.max.entry);
  return node;
}

bool PoolEachConcatPart(Graph* graph, const PassOptions& options, Node* pool) {
  if (QuantizedTwin(pool) != kQuantizedPooling || Attr(pool, "pool_type", "max") != "max" ||
      IsExcluded(options, pool) || pool->inputs.size() != 1 || pool->inputs[0].entry != 0) {
    return false;
  }
  Node* concat = pool->inputs[0].node;
  int n = 0;
  if (!IsChannelConcat(concat, kConcat, &n) || IsExcluded(options, concat) ||
      UseCount(graph, concat, 0) != 1) {
    return false;
  }
  for (const NodeEntry& e : concat->inputs) {
    if (e.node->op != kDequantize || e.entry != 0 || UseCount(graph, e.node, 0) != 1) return false;
  }
  // The parts to pool, so that the BatchNorm reads every part in its own range.
  std::vector<QuantizedPart> parts;
  std::vector<Node*> dequantizes;
  for (const NodeEntry& e : concat->inputs) {
    dequantizes.push_back(e.node);
    PartsOfDequantize(e.node, &parts);
  }
  const std::unordered_map<std::string, std::string> dequantize_attrs = dequantizes[0]->attrs;
  DetachNode(concat);
  for (size_t i = 0; i < parts.size(); ++i) {
    Node* part = PoolingOfPart(graph, pool, i, parts[i]);
    Node* dequantize = graph->addNode(part->name + "_dequantize", kDequantize);
    dequantize->attrs = dequantize_attrs;
    for (int k = 0; k < 3; ++k) SetInput(dequantize, k, part, k);
    SetInput(concat, i, dequantize, 0);
  }
  concat->attrs["num_args"] = std::to_string(parts.size());
  for (Node* dequantize : dequantizes) DetachIfUnused(graph, dequantize);
  RedirectUses(graph, pool, 0, concat, 0);
  DetachNode(pool);
  return true;
}

}  // namespace pass
}  // namespace bnq
