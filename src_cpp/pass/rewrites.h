// The rewrites of the BNQ_QUANTIZE pass, each one walk over the graph; the
// pass (bnq_quantize_pass.cc) runs them in the order it documents.
#pragma once

#include "../graph_edit.h"
#include "../pass_options.h"

namespace bnq {
namespace pass {

// concat_rewrites.cc: a BatchNorm after a concat reads its parts.
void PoolBeforeQuantizedConcat(Graph* graph, const PassOptions& options);
void PoolConcatParts(Graph* graph, const PassOptions& options);
void QuantizeAfterFloatConcat(Graph* graph, const PassOptions& options);
void FuseQuantizedConcat(Graph* graph, const PassOptions& options);

// fp32_batch_norm_rewrites.cc: the BatchNorms (and the poolings and flattens
// before them) that MXNet's flow leaves fp32.
void QuantizeNeighbours(Graph* graph, const PassOptions& options);
void QuantizeBetweenDequantizeAndQuantize(Graph* graph, const PassOptions& options);
void QuantizeFloatInputBatchNorm(Graph* graph, const PassOptions& options);
void QuantizeBeforeFloatOps(Graph* graph, const PassOptions& options);

// activation_rewrites.cc: the activation after a quantized BatchNorm.
void FuseDequantizedActivation(Graph* graph, const PassOptions& options);
void FuseBatchNormRelu(Graph* graph, const PassOptions& options);

// head_rewrites.cc: BatchNorm + activation + global average pooling.
void FuseGlobalAvgPooling(Graph* graph, const PassOptions& options);
void FuseMeanHead(Graph* graph, const PassOptions& options);
void QuantizeConcatMeanHead(Graph* graph, const PassOptions& options);
void QuantizeFloatInputMeanHead(Graph* graph, const PassOptions& options);

// avg_pooling_rewrites.cc: average poolings.
void FuseAvgPoolingIntoBatchNorm(Graph* graph, const PassOptions& options);
void RequantizeAveragePooling(Graph* graph, const PassOptions& options);

}  // namespace pass
}  // namespace bnq
