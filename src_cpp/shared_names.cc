// bnq_shared_names(): the names and numbers the Python package spells again
// (mxnet_bnq/names.py), as JSON, so that a test checks the two agree.
#include <string>

#include "op_names.h"
#include "scale_shift_folding.h"

namespace {

std::string Quoted(const char* s) { return std::string("\"") + s + "\""; }

std::string SharedNamesJson() {
  std::string ops;
  for (const char* op :
       {bnq::kQuantizedBatchNormOp, bnq::kQuantizedBatchNormReluOp,
        bnq::kQuantizedBatchNormReluPoolOp, bnq::kBatchNormQuantizeOp,
        bnq::kBatchNormReluQuantizeOp, bnq::kQuantizedBatchNormActOp, bnq::kBatchNormActQuantizeOp,
        bnq::kQuantizedBatchNormActPoolOp, bnq::kBatchNormActPoolQuantizeOp,
        bnq::kQuantizedAvgPoolBatchNormOp, bnq::kQuantizedConcatBatchNormOp,
        bnq::kQuantizedConcatBatchNormPoolOp, bnq::kQuantizedAvgPoolBatchNormPoolOp,
        bnq::kQuantizedConcatAvgPoolBatchNormOp, bnq::kQuantizedConcatAvgPoolBatchNormPoolOp}) {
    ops += (ops.empty() ? "" : ", ") + Quoted(op);
  }
  return "{\"batch_norm_ops\": [" + ops + "], \"region_op\": " + Quoted(bnq::kRegionOp) +
         ", \"partitioner\": " + Quoted(bnq::kRegionPartitioner) +
         ", \"pass_name\": " + Quoted(bnq::kPassName) +
         ", \"rewrite_attr\": " + Quoted(bnq::kRewriteAttr) +
         ", \"plugin_attr\": " + Quoted(bnq::kPluginAttr) +
         ", \"missing_relu_range_attr\": " + Quoted(bnq::kMissingReluRangeAttr) +
         ", \"fused_activation_attr\": " + Quoted(bnq::kFusedActivationAttr) +
         ", \"quantized_range\": {\"int8\": " +
         std::to_string(bnq::QuantizedRange(bnq::QuantType::kInt8)) +
         ", \"uint8\": " + std::to_string(bnq::QuantizedRange(bnq::QuantType::kUint8)) + "}}";
}

}  // namespace

extern "C" __attribute__((visibility("default"))) const char* bnq_shared_names() {
  static const std::string json = SharedNamesJson();
  return json.c_str();
}
