// Names of the plugin's operators: one spelling for their registrations
// (quantized_batch_norm_ops.cc) and the graph pass that puts them in models.
#pragma once

#include <string>

namespace bnq {

constexpr char kQuantizedBatchNormOp[] = "_contrib_quantized_batch_norm";
constexpr char kQuantizedBatchNormReluOp[] = "_contrib_quantized_batch_norm_relu";
constexpr char kQuantizedBatchNormReluPoolOp[] =
    "_contrib_quantized_batch_norm_relu_global_avg_pool";
constexpr char kBatchNormQuantizeOp[] = "_contrib_batch_norm_quantize";
constexpr char kBatchNormReluQuantizeOp[] = "_contrib_batch_norm_relu_quantize";

// The subgraph op of a region (BNQ_REGIONS partitioner): a whole int8 region
// run inside the library.
constexpr char kRegionOp[] = "_bnq_quantized_region";
constexpr char kRegionPartitioner[] = "BNQ_REGIONS";

// The plugin's BatchNorm ops.
inline bool IsPluginOp(const std::string& op) {
  for (const char* name :
       {kQuantizedBatchNormOp, kQuantizedBatchNormReluOp, kQuantizedBatchNormReluPoolOp,
        kBatchNormQuantizeOp, kBatchNormReluQuantizeOp}) {
    if (op == name) return true;
  }
  return false;
}

}  // namespace bnq
