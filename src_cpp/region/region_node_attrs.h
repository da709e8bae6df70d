// What a region needs to know about each op it runs, parsed from the node's
// attributes with MXNet 1.9.1's defaults (only attributes a user set reach the
// JSON).  One parser per op kind; the partitioner claims a node only when its
// parser accepts it, and the compiler builds from the same parsed form.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "../batch_norm_attrs.h"
#include "../pooling_attrs.h"
#include "mxnet/lib_api.h"

namespace bnq {
namespace region {

using mxnet::ext::Node;

enum class OpKind {
  kConv,            // _sg_mkldnn_conv, quantized
  kFullyConnected,  // _sg_mkldnn_fully_connected, quantized, float output
  kPooling,         // _contrib_quantized_pooling
  kRelu,            // _contrib_quantized_act (relu)
  kFlatten,         // _contrib_quantized_flatten
  kBatchNorm,       // the plugin's ops
  kQuantize,        // _contrib_quantize_v2 (float32 data)
  kRequantize,      // _contrib_requantize (int32 data)
  kDequantize,      // _contrib_dequantize
  kAdd,             // _contrib_quantized_elemwise_add
  kConcat,          // _contrib_quantized_concat
};

struct AddAttrs {
  bool calibrated = false;
  float min_calib = 0.f, max_calib = 0.f;
};

struct ConcatAttrs {
  int num_args = 0;
  int dim = 1;
};

// _contrib_quantize_v2 and _contrib_requantize.  Uncalibrated, both take
// the range from the data at each forward.
struct QuantizeAttrs {
  std::string out_type = "int8";  // MXNet's default
  bool calibrated = false;
  float min_calib = 0.f, max_calib = 0.f;
  // MXNet's GetQuantizeOutputType: auto is uint8 only for a calibrated
  // range that is not negative.
  bool uint8_output() const {
    return out_type == "uint8" || (out_type == "auto" && calibrated && min_calib >= 0.f);
  }
};

// An activation MXNet fuses into a quantized convolution.
enum class FusedAct {
  kNone,
  kRelu,         // Activation(relu), relu
  kLeakyRelu,    // LeakyReLU(leaky): x > 0 ? x : slope * x
  kBoundedRelu,  // clip(0, a_max): MXNet lets the uint8 output's saturation do it
  kGelu,         // LeakyReLU(gelu): x * Phi(x) (erf form), of the real values
};

struct ConvAttrs {
  std::vector<int64_t> kernel, stride, pad, dilate;  // one entry per spatial dim
  int64_t num_filter = 0;
  int64_t num_group = 1;
  bool no_bias = false;
  bool with_bn = false, with_act = false, with_sum = false, with_postsum_act = false;
  FusedAct act = FusedAct::kNone;  // with_act
  float act_alpha = 0.f;           // slope (leaky) or a_max (bounded)
  BatchNormAttrs bn;               // with_bn
  bool calibrated = false;         // else int32 output
  float min_calib = 0.f, max_calib = 0.f;
  // Output type when calibrated (MXNet's IsOutputUInt8): uint8 after a ReLU (slope 0) or a
  // bounded ReLU that nothing is added to later, or after a post-sum ReLU.
  bool uint8_output() const {
    return with_postsum_act ||
           (with_act && !with_sum && (act == FusedAct::kRelu || act == FusedAct::kBoundedRelu));
  }
  // Input positions, as MXNet's SgMKLDNNConvListInputNames orders them.
  int num_inputs() const;
  int sum_input() const;       // with_sum
  int data_min_input() const;  // then data_max, sum_min, sum_max
};

struct FullyConnectedAttrs {
  int64_t num_hidden = 0;
  bool no_bias = false;
  bool flatten = true;
  bool float_output = true;  // enable_float_output; else calibrated int8/uint8
  bool relu = false;         // with_eltwise of a ReLU (uint8 output)
  // channel_wise_quantize: float weights and bias quantized per output
  // channel by the op itself (inputs: data, weight, [bias], min, max data).
  bool channel_wise = false;
  float min_calib = 0.f, max_calib = 0.f;
};

struct BatchNormOpAttrs {
  BatchNormAttrs bn;  // with the fused activation (bn.act)
  bool global_avg_pool = false;
  bool float_input = false;
  // The concatenated inputs of _contrib_quantized_concat_batch_norm (0: one data input).
  int num_concat = 0;
  // _contrib_quantized_avg_pool_batch_norm and the concat forms with it: the
  // average pooling before the BatchNorm.
  bool avg_pool_in = false;
  PoolingAttrs avg_pool;
};

// The plugin's average pooling: the mean in its own calibrated range.
struct OwnRange {
  bool calibrated = false;
  float min = 0.f, max = 0.f;
};

struct RegionNode {
  OpKind kind;
  ConvAttrs conv;
  PoolingAttrs pool;
  bool pool_own_range = false;  // the plugin's _contrib_quantized_avg_pooling
  OwnRange pool_range;
  FullyConnectedAttrs fc;
  BatchNormOpAttrs bn;
  QuantizeAttrs quantize;
  AddAttrs add;
  ConcatAttrs concat;
};

// Parses `node` into `out`.  Returns false with the reason in `why` when the
// region cannot run the node (unknown op or attributes it does not support).
bool ParseRegionNode(const Node* node, RegionNode* out, std::string* why);

}  // namespace region
}  // namespace bnq
