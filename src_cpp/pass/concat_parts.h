// The parts of a concatenation, each quantized in its own range, as the
// plugin's concat BatchNorm ops read them: through MXNet's quantized concats
// (which rescale every part to the widest range) and the dequantizes before
// an fp32 Concat, and pooled part by part.
#pragma once

#include <cstddef>
#include <vector>

#include "../graph_edit.h"
#include "../pass_options.h"

namespace bnq {
namespace pass {

// One input of a concatenation, quantized: its data and range ends.
struct QuantizedPart {
  NodeEntry data, min, max;
};

// A concatenation along the channel axis 1 of NCHW-like data (MXNet's fp32
// Concat or its quantized twin, by `op`), with its number of inputs.
bool IsChannelConcat(const Node* node, const char* op, int* num_args);

// The quantized parts of output 0 of MXNet's quantized concat `concat`, in
// channel order, expanding the parts that are themselves such concats (a
// dense block's chain): the BatchNorm then reads every part in its own range.
void QuantizedConcatParts(const Node* concat, std::vector<QuantizedPart>* parts, int depth = 0);

// The quantized parts that the dequantize `dequantize` reads: its input,
// or through MXNet's quantized concat (which rescales them to the widest
// range, a rounding of the others) that concat's parts.
void PartsOfDequantize(const Node* dequantize, std::vector<QuantizedPart>* parts);

// The quantized parts of the fp32 Concat `concat` whose every input is a
// dequantize (or such a Concat): false if one is not.
bool DequantizedConcatParts(const Node* concat, std::vector<QuantizedPart>* parts, int depth = 0);

// The quantized parts of the concat that the average pooling `pool` reads:
// an fp32 Concat of dequantizes (an fp32 pooling), or MXNet's quantized
// concat, whose range the pooling passes on.  False if it reads neither.
bool PooledConcatParts(const Node* pool, std::vector<QuantizedPart>* parts);

// Makes `bn` the concat BatchNorm op reading `parts` (its parameters stay):
// data_0..n-1, gamma, beta, moving_mean, moving_var, min_0, max_0, ...
void BecomeConcatBatchNorm(Node* bn, const std::vector<QuantizedPart>& parts);

// A plugin BatchNorm over the channels (axis 1) that can read a concat's
// parts instead (the quantized ones, pooled or not).
bool ReadsConcatParts(const Node* bn);

// MXNet's int8 pooling with the attributes of `pool`, of concatenated part
// `i` (its quantized data, min, max).
Node* PoolingOfPart(Graph* graph, const Node* pool, size_t i, const QuantizedPart& part);

// dequantize.. -> Concat -> max Pooling (-> BatchNorm ...)
//   =>  quantized_pooling.. -> dequantize.. -> Concat (-> BatchNorm ...)
// Max pooling commutes with the concat (it pools each channel) and with
// quantization (exact in int8): each part is pooled in int8, and the
// BatchNorm after the concat then reads the quantized parts (the concat
// BatchNorm op).  Only where the concat and its dequantizes have no other
// reader: never more dequantize nodes.
// The rewrite of PoolConcatParts for one fp32 max `pool`, if it reads such a
// concat; false (and no change) if not.
bool PoolEachConcatPart(Graph* graph, const PassOptions& options, Node* pool);

}  // namespace pass
}  // namespace bnq
