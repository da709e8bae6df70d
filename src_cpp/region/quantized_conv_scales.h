// The scale arithmetic of MXNet 1.9.1's quantized convolution and fully
// connected ops (src/operator/subgraph/mkldnn/mkldnn_conv.cc, mkldnn_fc.cc,
// mkldnn_common.h), reproduced step by step so that a region computes MXNet's
// bits.  Pure: no MXNet, no oneDNN.  A region's convolution then runs
//
//     dst = saturate(round(post_ops(acc * requantize[c] + bias[c] * requantize[c])))
//
// on the quantized weights and bias made here (acc = the int32 accumulation).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "../scale_shift_folding.h"

namespace bnq {
namespace region {

// Quantization levels per unit of real value of a tensor of type `t` with
// range [min, max]: QuantizedRange(t) / max(|min|, |max|), or 2^31 when that
// maximum is 0 (MXNet's GetQuantizeScale).
float QuantizeScale(QuantType t, float min, float max);

// A BatchNorm folded into the convolution before it (with_bn).
struct FoldedBatchNorm {
  const float* gamma;
  const float* beta;
  const float* mean;
  const float* var;
  double eps;
  bool fix_gamma;
};

// MXNet's UpdateConvWeightBias: weights (out_channels x per_channel, in
// place) scaled by alpha[c] = (fix_gamma ? 1 : gamma) / sqrt(var + eps), and
// the bias beta + alpha * (bias - mean) (beta - alpha * mean without a bias;
// `bias` is resized to out_channels when empty).
void FoldBatchNormIntoConv(const FoldedBatchNorm& bn, int64_t out_channels, int64_t per_channel,
                           std::vector<float>* weights, std::vector<float>* bias);

// How a convolution's output is quantized.
struct ConvOutput {
  QuantType data_type;       // of the convolution's input
  float data_min, data_max;  // its range
  bool calibrated;           // min/max_calib_range set: int8/uint8 output
  float calib_min, calib_max;
  bool uint8_output;  // relu without sum, or relu after the sum
};

struct QuantizedConv {
  std::vector<int8_t> weights;  // same element order as the float weights
  // The unrounded products w * weight scale (`weights` is their saturated
  // rounding): what the region hands oneDNN's reorder, which halves them on
  // CPUs without VNNI before it rounds, as MXNet's oneDNN does.
  std::vector<float> scaled_weights;
  std::vector<int32_t> bias;      // empty without a bias
  std::vector<float> requantize;  // per output channel (calibrated) or one value
  float data_scale = 0.f;
  float output_scale = 0.f;  // levels per unit of the output
  float min_output = 0.f, max_output = 0.f;
  // Uncalibrated: the one weight scale and the weights' max |w|, what
  // Int32ConvOutputFor needs when the input range changes.
  float weight_scale = 0.f, weight_max_abs = 0.f;
};

// The parts of an uncalibrated (int32 output) convolution that depend on its
// input range, which MXNet recomputes whenever that range changes: the int32
// bias, the output scale (levels of the int32 output per unit) and MXNet's
// output range.  `bias` (float, after any BatchNorm folding) may be null.
struct Int32ConvOutput {
  std::vector<int32_t> bias;
  float output_scale = 0.f;
  float min_output = 0.f, max_output = 0.f;
};
void Int32ConvOutputFor(QuantType data_type, float data_min, float data_max, float weight_scale,
                        float weight_max_abs, const float* bias, int64_t out_channels,
                        Int32ConvOutput* out);

// MXNet's quantize_v2 of float data and requantize of int32 data: the output
// range and the scale of q = saturate(round(x * scale)).
struct Requantized {
  float min = 0.f, max = 0.f, scale = 0.f;
};
// quantize_v2: [min, max] is the calibrated range or (uncalibrated) the data's
// own minimum and maximum.
Requantized QuantizeFloat(QuantType out, float min, float max);
// requantize of int32 data whose real range is [in_min, in_max]: to the
// calibrated range, or (uncalibrated) to max(|data_min|, |data_max|) levels
// of the input, the data's own extremes (int32 values as floats, as MXNet
// multiplies them).
Requantized RequantizeInt32(QuantType out, float in_min, float in_max, bool calibrated,
                            float calib_min, float calib_max, float data_min, float data_max);

// MXNet's GetWeightScales + ConvertWeightBias2MKLDNN + the requantize scales
// of SgMKLDNNConvOperator::Forward.  `bias` may be null.  Calibrated:
// per-channel weight scales 127.5 / max|w[c]| (capped so that the int32 bias
// stays within INT_MAX / 2), requantize[c] = output_scale / data_scale /
// weight_scale[c].  Uncalibrated: one weight scale, int32 output, requantize
// {1}, and MXNet's int32 output range.
// Returns false and sets `error` for non-finite weights or bias.
bool QuantizeConv(const ConvOutput& out, int64_t out_channels, int64_t per_channel,
                  const float* weights, const float* bias, QuantizedConv* q, std::string* error);

// The quantized fully connected op with int8 weights and bias quantized
// offline (tensor-wise): MXNet's SgMKLDNNFCOp::Forward.  Float output, or a
// calibrated int8/uint8 output (requantize fused), optionally after a fused
// ReLU (with_eltwise), which MXNet applies before the output scale.
struct FullyConnectedOutput {
  bool quantized = false;  // false: float output
  bool relu = false;       // the output is uint8 with a ReLU, else int8
  float min_calib = 0.f, max_calib = 0.f;
};

struct QuantizedFullyConnected {
  std::vector<int8_t> weights;  // rescaled when the bias would overflow
  std::vector<int32_t> bias;    // empty without a bias
  // out = saturate(round(post_scale * act((acc + bias) * output_scale))); float
  // output: the real value, acc_with_bias * output_scale (post_scale 1).
  float output_scale = 0.f;
  float post_scale = 1.f;
};

bool QuantizeFullyConnected(QuantType data_type, float data_min, float data_max,
                            const int8_t* weights, int64_t weight_count, float weight_min,
                            float weight_max, const int8_t* bias, int64_t out_channels,
                            float bias_min, float bias_max, const FullyConnectedOutput& out,
                            QuantizedFullyConnected* q, std::string* error);

// The channel-wise quantized fully connected op (channel_wise_quantize):
// float weights quantized per output channel as a calibrated convolution's
// (127.5 / max|w[c]|, capped for the int32 bias), the bias at data scale x
// weight scale[c], and per channel out = act((acc + bias) * output_scale[c]),
// times post_scale after a fused ReLU (MXNet's SgMKLDNNFCOp::Forward).
struct ChannelWiseFullyConnected {
  std::vector<int8_t> weights;
  std::vector<int32_t> bias;  // empty without a bias
  std::vector<float> output_scales;
  float post_scale = 1.f;
};
bool QuantizeFullyConnectedChannelWise(QuantType data_type, float data_min, float data_max,
                                       const float* weights, int64_t out_channels,
                                       int64_t per_channel, const float* bias,
                                       const FullyConnectedOutput& out,
                                       ChannelWiseFullyConnected* q, std::string* error);

// Rounding of float to int as the oneDNN reorders MXNet uses do it: to
// nearest, ties to even, saturated to the type's range.
int8_t SaturateRoundS8(float v);
int32_t SaturateRoundS32(float v);

}  // namespace region
}  // namespace bnq
