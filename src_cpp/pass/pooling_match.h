// Which fp32 and int8 poolings, means and flattens the BNQ_QUANTIZE rewrites
// take: their int8 twins, global average poolings and means over H and W (a
// network's head), and average poolings a BatchNorm op can take in.
#pragma once

#include "../graph_edit.h"
#include "../pass_options.h"
#include "rewrite_support.h"

namespace bnq {
namespace pass {

// MXNet's quantized op for an fp32 Pooling or Flatten it can run (the forms
// its quantize pass makes), else nullptr.
// Not Concat: MXNet's quantized concat rescales every input to the largest
// range, and the BatchNorm after it then amplifies the coarse steps of the
// channels that came from a small range (a dense-style random net lost 7 dB
// of logit SQNR against the concat left fp32).
const char* QuantizedTwin(const Node* node);

// True if output 0 of `node` feeds a BatchNorm, directly or through ops with
// a quantized twin.
bool LeadsToBatchNorm(const Node* node, int depth = 0);

// The pooled op pools over the dimensions after the channel axis: that is
// global pooling only for the channel axis 1.
bool PoolsOverSpatialAxes(const Node* bn);

// Global average pooling over the spatial dimensions of NCHW-like data, by
// MXNet's quantized op or (`op` "Pooling") its fp32 one; both keep those
// dimensions as 1.
bool IsGlobalAvgPooling(const Node* node, const char* op = kQuantizedPooling);

// A mean over axes 2 and 3 only, keeping or dropping them, of 4-D data after
// the BatchNorm `bn`: global average pooling of NCHW data (gluon's heads,
// F.mean(x, axis=(2, 3))).  Of 5-D data it would not be (the pooled ops pool
// every axis after the channels): where the shapes are known the data must
// be 4-D, and where they are not (calib_mode='none' without data shapes) the
// classifier after the mean must take one value per channel of `bn`.
bool IsSpatialMean(const Graph* graph, const Node* bn, const Node* node, bool* keepdims);

// An average pooling of planar NCHW data a BatchNorm can take in
// (MXNet's quantized pooling, the plugin's, or an fp32 Pooling).
bool IsAvgPoolingBeforeBatchNorm(const PassOptions& options, const Node* pool);

// Gives `bn` the attributes of the average pooling `pool` it takes in.
void TakePoolingAttrs(Node* bn, const Node* pool);

}  // namespace pass
}  // namespace bnq
