// The arithmetic of a quantized BatchNorm: folds the BatchNorm parameters and
// the input/output quantization ranges into one per-channel affine map on the
// quantized values, followed by the fused activation in output levels,
//
//     q_out = saturate(round(act_levels(q_in * scale[c] + shift[c])))
//
// ReLU, clip and leaky ReLU commute with a positive scale (act(k y) = k act(y)
// for clip with its bounds scaled), so the activation applies to the values
// in levels: a negative slope, and clamp bounds where saturation alone does
// not clip (ReLU and ReLU6 with its range within [0, 6] need neither).
// A curve (sigmoid, tanh, softrelu, gelu) does not commute: the map then
// gives real values, the curve applies to them, and a last factor turns the
// result into levels,
//
//     q_out = saturate(round(curve(q_in * scale[c] + shift[c]) * output_scale))
//
// using MXNet's quantization conventions: a tensor of type int8 with range
// [min, max] holds real values q * max(|min|, |max|) / 127.5, a uint8 tensor
// q * max(|min|, |max|) / 255.5 (src/operator/quantization/quantization_utils.h).
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "batch_norm_attrs.h"

namespace bnq {

enum class QuantType { kInt8, kUint8 };

// MXNet's quantization levels for a tensor of real range [min, max]: a real
// value v is q = v * QuantizedRange / max(|min|, |max|) (127.5 int8, 255.5 uint8).
float QuantizedRange(QuantType t);

// Per-channel BatchNorm parameters (float32 arrays of `channels` elements).
struct ChannelParams {
  const float* gamma;
  const float* beta;
  const float* moving_mean;
  const float* moving_var;
  int64_t channels;
};

// The output type of a BatchNorm followed by `act`: uint8 when the
// activation's output cannot be negative, int8 otherwise.
QuantType FusedOutputType(const FusedActivation& act);

struct FoldedScaleShift {
  std::vector<float> scale;
  std::vector<float> shift;
  // The activation in levels, applied before rounding: v < 0 ? v * slope : v,
  // then clamped to [clamp_lo, clamp_hi] (infinite when saturation suffices).
  float negative_slope = 1.f;
  float clamp_lo = -std::numeric_limits<float>::infinity();
  float clamp_hi = std::numeric_limits<float>::infinity();
  // A curve (IsCurve), kNone otherwise; output_scale is then the output's
  // levels per real unit (1 without a curve: scale and shift give levels).
  FusedActivation::Kind curve = FusedActivation::Kind::kNone;
  float output_scale = 1.f;
  // Real range of the quantized output, as written to min_output/max_output.
  float min_output = 0.f;
  float max_output = 0.f;
};

// Folds BatchNorm parameters, the activation `attrs.act` and ranges;
// `out_type` must be FusedOutputType(attrs.act).  Without a calibrated range
// in `attrs` the output range is derived from the input range: the tightest
// range that holds every value the op can produce.  A calibrated range is
// the activation's output range.  `mean_follows`: the values are averaged
// (global average pooling) before they are rounded and saturated, so the
// activation's bounds are all explicit (a ReLU as clamp_lo 0, clip's bounds
// wherever they are), and the range is the mean's; curves cannot be averaged
// that way (the mean kernel works in levels), so they are an error then.
// Returns false and sets `error` for invalid parameters or ranges.
bool FoldScaleShift(const BatchNormAttrs& attrs, const ChannelParams& params, float min_data,
                    float max_data, QuantType in_type, QuantType out_type, FoldedScaleShift* folded,
                    std::string* error, bool mean_follows = false);

// The same for real-valued input (float32, or integers taken as they are:
// step 1): the map quantizes the BatchNorm's output directly.  Needs the
// calibrated output range in `attrs` (the mean's with `mean_follows`).
bool FoldScaleShiftFloatInput(const BatchNormAttrs& attrs, const ChannelParams& params,
                              QuantType out_type, FoldedScaleShift* folded, std::string* error,
                              bool mean_follows = false);

// One input of a concatenation along the channel axis that a BatchNorm reads
// (the _concat_batch_norm op): its channels, its own range and type.
struct ConcatInput {
  int64_t channels;
  float min_data;
  float max_data;
  QuantType type;
};

// Folds a BatchNorm over the concatenation of `inputs` (in order, their
// channels summing to params.channels): one FoldedScaleShift per input, each
// from that input's step, so that no channel is rescaled into another input's
// range first.  All share one output range: the calibrated one, else the
// union of the ranges derived for each input.  `mean_follows` as in
// FoldScaleShift (the _global_avg_pool form).
bool FoldConcatScaleShift(const BatchNormAttrs& attrs, const ChannelParams& params,
                          const std::vector<ConcatInput>& inputs, QuantType out_type,
                          std::vector<FoldedScaleShift>* folded, std::string* error,
                          bool mean_follows = false);

}  // namespace bnq
