// Names the plugin gives its operators, graph pass, partitioner and node
// attributes: one spelling for the registrations, the pass and the region
// code.  mxnet_bnq/names.py spells them for Python; bnq_shared_names()
// (shared_names.cc) lets a test check that both agree.
#pragma once

#include <string>

namespace bnq {

constexpr char kQuantizedBatchNormOp[] = "_contrib_quantized_batch_norm";
constexpr char kQuantizedBatchNormReluOp[] = "_contrib_quantized_batch_norm_relu";
constexpr char kQuantizedBatchNormReluPoolOp[] =
    "_contrib_quantized_batch_norm_relu_global_avg_pool";
constexpr char kBatchNormQuantizeOp[] = "_contrib_batch_norm_quantize";
constexpr char kBatchNormReluQuantizeOp[] = "_contrib_batch_norm_relu_quantize";
// BatchNorm + the activation its attributes give (act_type clip or leaky, ...).
constexpr char kQuantizedBatchNormActOp[] = "_contrib_quantized_batch_norm_act";
constexpr char kBatchNormActQuantizeOp[] = "_contrib_batch_norm_act_quantize";
// The same followed by global average pooling (as the _relu_global_avg_pool op).
constexpr char kQuantizedBatchNormActPoolOp[] = "_contrib_quantized_batch_norm_act_global_avg_pool";
constexpr char kBatchNormActPoolQuantizeOp[] = "_contrib_batch_norm_act_global_avg_pool_quantize";
// BatchNorm [+ act] over a concatenation of quantized inputs, each in its own range.
constexpr char kQuantizedConcatBatchNormOp[] = "_contrib_quantized_concat_batch_norm";
constexpr char kQuantizedConcatBatchNormPoolOp[] =
    "_contrib_quantized_concat_batch_norm_global_avg_pool";
// The same with an average pooling between the concat and the BatchNorm
// (each input pooled in its own range, the BatchNorm on the unrounded means).
constexpr char kQuantizedConcatAvgPoolBatchNormOp[] =
    "_contrib_quantized_concat_avg_pool_batch_norm";
constexpr char kQuantizedConcatAvgPoolBatchNormPoolOp[] =
    "_contrib_quantized_concat_avg_pool_batch_norm_global_avg_pool";

// Average pooling, then BatchNorm [+ act] on the unrounded mean.
constexpr char kQuantizedAvgPoolBatchNormOp[] = "_contrib_quantized_avg_pool_batch_norm";
// The same followed by global average pooling (a head after an average pooling).
constexpr char kQuantizedAvgPoolBatchNormPoolOp[] =
    "_contrib_quantized_avg_pool_batch_norm_global_avg_pool";

// The concat BatchNorm ops (their data: num_args inputs).
inline bool IsConcatBatchNormOp(const std::string& op) {
  return op == kQuantizedConcatBatchNormOp || op == kQuantizedConcatBatchNormPoolOp ||
         op == kQuantizedConcatAvgPoolBatchNormOp || op == kQuantizedConcatAvgPoolBatchNormPoolOp;
}

// Those of them that average pool their inputs before the BatchNorm.
inline bool IsConcatAvgPoolBatchNormOp(const std::string& op) {
  return op == kQuantizedConcatAvgPoolBatchNormOp || op == kQuantizedConcatAvgPoolBatchNormPoolOp;
}

// MXNet's quantized average pooling, writing the mean in its own calibrated range.
constexpr char kQuantizedAvgPoolingOp[] = "_contrib_quantized_avg_pooling";

// The subgraph op of a region (BNQ_REGIONS partitioner): a whole int8 region
// run inside the library.
constexpr char kRegionOp[] = "_bnq_quantized_region";
constexpr char kRegionPartitioner[] = "BNQ_REGIONS";

// The graph pass, and the hidden attributes it writes: the rewrite that made
// a node (for reports), and on every node that needs the plugin's numerics
// its marker (MXNet's own op of the same name computes other numbers).
constexpr char kPassName[] = "BNQ_QUANTIZE";
constexpr char kRewriteAttr[] = "__bnq_rewrite__";
constexpr char kPluginAttr[] = "__bnq_plugin__";
constexpr char kPluginAttrVersion[] = "1";
// On a BatchNorm the pass quantized without the output range it needs (of a
// fused ReLU, or of the BatchNorm (+act) before fp32 ops): the name of the
// node whose output range it lacks (the op then uses the pre-ReLU
// calibration, or derives its range).  The flow runs the pass once before
// calibrating to learn which layer outputs to collect.
constexpr char kMissingReluRangeAttr[] = "__bnq_missing_relu_range__";
// On a BatchNorm op that fused an activation: that activation node's name
// (MXNet's quantized ReLU, or the fp32 activation), for reports.
constexpr char kFusedActivationAttr[] = "__bnq_fused_activation__";

// The plugin's BatchNorm ops.
inline bool IsPluginOp(const std::string& op) {
  for (const char* name :
       {kQuantizedBatchNormOp, kQuantizedBatchNormReluOp, kQuantizedBatchNormReluPoolOp,
        kBatchNormQuantizeOp, kBatchNormReluQuantizeOp, kQuantizedBatchNormActOp,
        kBatchNormActQuantizeOp, kQuantizedBatchNormActPoolOp, kBatchNormActPoolQuantizeOp,
        kQuantizedConcatBatchNormOp, kQuantizedAvgPoolBatchNormOp, kQuantizedConcatBatchNormPoolOp,
        kQuantizedAvgPoolBatchNormPoolOp, kQuantizedConcatAvgPoolBatchNormOp,
        kQuantizedConcatAvgPoolBatchNormPoolOp}) {
    if (op == name) return true;
  }
  return false;
}

}  // namespace bnq
