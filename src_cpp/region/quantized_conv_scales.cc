#include "quantized_conv_scales.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <limits>
#include <utility>

namespace bnq {
namespace region {
namespace {

// MXNet's MaxValue<int32_t>() as the float it becomes.
constexpr float kInt32MaxAsFloat = static_cast<float>(INT32_MAX);

// std::round (half away from zero, as MXNet's FC code rounds), saturated;
// NaN becomes 0.
int32_t RoundAwayS32(float v) {
  const float r = std::round(v);
  if (std::isnan(r)) return 0;
  if (r <= -2147483648.f) return INT32_MIN;
  if (r >= 2147483648.f) return INT32_MAX;
  return static_cast<int32_t>(r);
}

float MaxAbs(float a, float b) { return std::max(std::fabs(a), std::fabs(b)); }

bool AllFinite(const float* v, int64_t n, const char* what, std::string* error) {
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isfinite(v[i])) {
      *error = std::string(what) + " element " + std::to_string(i) + " is not finite";
      return false;
    }
  }
  return true;
}

// max(|min|, |max|) of each output channel's weights: MXNet keeps each
// channel's min and max (starting at the type's limits).
std::vector<float> ChannelMaxAbs(const float* weights, int64_t out_channels, int64_t per_channel) {
  std::vector<float> max_abs(out_channels);
  for (int64_t c = 0; c < out_channels; ++c) {
    float lo = std::numeric_limits<float>::max(), hi = std::numeric_limits<float>::lowest();
    for (int64_t k = 0; k < per_channel; ++k) {
      lo = std::min(lo, weights[c * per_channel + k]);
      hi = std::max(hi, weights[c * per_channel + k]);
    }
    max_abs[c] = MaxAbs(lo, hi);
  }
  return max_abs;
}

// MXNet's GetWeightScales with per-channel scales: 127.5 / max|w[c]|, capped
// so that the int32 bias stays within INT_MAX / 2 (a oneDNN bug, says MXNet).
std::vector<float> ChannelWeightScales(const float* weights, int64_t out_channels,
                                       int64_t per_channel, const float* bias, float data_scale) {
  std::vector<float> scales = ChannelMaxAbs(weights, out_channels, per_channel);
  for (int64_t c = 0; c < out_channels; ++c) {
    float scale = scales[c] != 0.f ? 127.5f / scales[c] : kInt32MaxAsFloat;
    if (bias != nullptr && bias[c] != 0.f) {
      const float limit = (bias[c] > 0 ? kInt32MaxAsFloat : -2147483648.f);
      scale = std::min(scale, limit / 2 / bias[c] / data_scale);
    }
    scales[c] = scale;
  }
  return scales;
}

}  // namespace

int8_t SaturateRoundS8(float v) {
  const float r = std::nearbyint(v);  // the default rounding mode: ties to even
  return static_cast<int8_t>(std::min(127.f, std::max(-128.f, r)));
}

int32_t SaturateRoundS32(float v) {
  const float r = std::nearbyint(v);
  if (!(r > -2147483648.f)) return INT32_MIN;  // also NaN, as oneDNN's saturation
  if (r >= 2147483648.f) return INT32_MAX;
  return static_cast<int32_t>(r);
}

float QuantizeScale(QuantType t, float min, float max) {
  const float range = MaxAbs(min, max);
  return range != 0.f ? QuantizedRange(t) / range : kInt32MaxAsFloat;
}

void FoldBatchNormIntoConv(const FoldedBatchNorm& bn, int64_t out_channels, int64_t per_channel,
                           std::vector<float>* weights, std::vector<float>* bias) {
  const bool had_bias = !bias->empty();
  bias->resize(out_channels);
  for (int64_t c = 0; c < out_channels; ++c) {
    // float / double sqrt, as MXNet's expression with a double eps evaluates.
    const float alpha =
        static_cast<float>((bn.fix_gamma ? 1.0f : bn.gamma[c]) / std::sqrt(bn.var[c] + bn.eps));
    (*bias)[c] =
        had_bias ? bn.beta[c] + alpha * ((*bias)[c] - bn.mean[c]) : bn.beta[c] - alpha * bn.mean[c];
    float* w = weights->data() + c * per_channel;
    for (int64_t k = 0; k < per_channel; ++k) w[k] = w[k] * alpha;
  }
}

bool QuantizeConv(const ConvOutput& out, int64_t out_channels, int64_t per_channel,
                  const float* weights, const float* bias, QuantizedConv* q, std::string* error) {
  const int64_t count = out_channels * per_channel;
  if (!AllFinite(weights, count, "weight", error)) return false;
  if (bias != nullptr && !AllFinite(bias, out_channels, "bias", error)) return false;
  if (!std::isfinite(out.data_min) || !std::isfinite(out.data_max)) {
    *error = "the input range is not finite";
    return false;
  }
  q->data_scale = QuantizeScale(out.data_type, out.data_min, out.data_max);

  std::vector<float> weight_scales;
  if (out.calibrated) {
    weight_scales = ChannelWeightScales(weights, out_channels, per_channel, bias, q->data_scale);
  } else {
    // One scale for the tensor: MXNet's min and max over all channels.
    const std::vector<float> max_abs = ChannelMaxAbs(weights, out_channels, per_channel);
    const float total = *std::max_element(max_abs.begin(), max_abs.end());
    weight_scales.assign(1, total != 0.f ? 127.5f / total : kInt32MaxAsFloat);
    q->weight_scale = weight_scales[0];
    q->weight_max_abs = total;
  }

  q->weights.resize(count);
  q->scaled_weights.resize(count);
  for (int64_t c = 0; c < out_channels; ++c) {
    const float s = weight_scales[out.calibrated ? c : 0];
    for (int64_t k = 0; k < per_channel; ++k) {
      const int64_t i = c * per_channel + k;
      q->scaled_weights[i] = weights[i] * s;
      q->weights[i] = SaturateRoundS8(q->scaled_weights[i]);
    }
  }
  q->bias.clear();
  if (out.calibrated && bias != nullptr) {
    q->bias.resize(out_channels);
    for (int64_t c = 0; c < out_channels; ++c) {
      q->bias[c] = SaturateRoundS32(bias[c] * (weight_scales[c] * q->data_scale));
    }
  }

  if (out.calibrated) {
    q->output_scale = QuantizeScale(out.uint8_output ? QuantType::kUint8 : QuantType::kInt8,
                                    out.calib_min, out.calib_max);
    q->requantize.resize(out_channels);
    for (int64_t c = 0; c < out_channels; ++c) {
      q->requantize[c] = q->output_scale / q->data_scale / weight_scales[c];
    }
    q->min_output = out.calib_min;
    q->max_output = out.calib_max;
  } else {
    Int32ConvOutput int32;
    Int32ConvOutputFor(out.data_type, out.data_min, out.data_max, q->weight_scale,
                       q->weight_max_abs, bias, out_channels, &int32);
    q->bias = std::move(int32.bias);
    q->output_scale = int32.output_scale;
    q->min_output = int32.min_output;
    q->max_output = int32.max_output;
    q->requantize.assign(1, 1.f);
  }
  // Tiny or huge ranges (a denormal maximum, say) make the scales overflow.
  for (float r : q->requantize) {
    if (!std::isfinite(r)) {
      *error = "the weights and ranges give a non-finite requantization scale";
      return false;
    }
  }
  return true;
}

void Int32ConvOutputFor(QuantType data_type, float data_min, float data_max, float weight_scale,
                        float weight_max_abs, const float* bias, int64_t out_channels,
                        Int32ConvOutput* out) {
  const float data_scale = QuantizeScale(data_type, data_min, data_max);
  out->bias.clear();
  if (bias != nullptr) {
    out->bias.resize(out_channels);
    for (int64_t c = 0; c < out_channels; ++c) {
      out->bias[c] = SaturateRoundS32(bias[c] * (weight_scale * data_scale));
    }
  }
  out->output_scale = data_scale * weight_scale;
  // MXNet's int32 output range (QuantizationRangeForS8S8/S8U8Multiplication):
  // one level of weight times one level of data, times INT32_MAX.
  const float weight_level = weight_max_abs / 127.f;
  const float data_level =
      MaxAbs(data_min, data_max) / (data_type == QuantType::kInt8 ? 127.f : 255.f);
  out->max_output = weight_level * data_level * kInt32MaxAsFloat;
  out->min_output = -out->max_output;
}

Requantized QuantizeFloat(QuantType out, float min, float max) {
  const float range = MaxAbs(min, max);
  Requantized r;
  r.scale = QuantizedRange(out) / range;
  r.min = out == QuantType::kUint8 ? min : -range;
  r.max = out == QuantType::kUint8 ? max : range;
  return r;
}

Requantized RequantizeInt32(QuantType out, float in_min, float in_max, bool calibrated,
                            float calib_min, float calib_max, float data_min, float data_max) {
  // MXNet's MinAbs(INT32_MIN, INT32_MAX) as a float: 2^31.
  constexpr float kInt32Range = 2147483648.f;
  const float in_range = MaxAbs(in_min, in_max);
  float real_range;
  if (calibrated) {
    real_range = MaxAbs(calib_min, calib_max);
  } else {
    real_range = MaxAbs(data_min, data_max) * in_range / kInt32Range;
  }
  // Not 127.5 / 255.5 here: MXNet requantizes to the type's largest value.
  const float levels = out == QuantType::kUint8 ? 255.f : 127.f;
  Requantized r;
  r.scale = in_range / kInt32Range * (levels / real_range);
  r.min = out == QuantType::kUint8 ? 0.f : -real_range;
  r.max = real_range;
  return r;
}

bool QuantizeFullyConnected(QuantType data_type, float data_min, float data_max,
                            const int8_t* weights, int64_t weight_count, float weight_min,
                            float weight_max, const int8_t* bias, int64_t out_channels,
                            float bias_min, float bias_max, const FullyConnectedOutput& out,
                            QuantizedFullyConnected* q, std::string* error) {
  for (float v : {data_min, data_max, weight_min, weight_max, bias_min, bias_max, out.min_calib,
                  out.max_calib}) {
    if (!std::isfinite(v)) {
      *error = "a quantization range of the fully connected op is not finite";
      return false;
    }
  }
  const float data_scale = QuantizeScale(data_type, data_min, data_max);
  float weight_scale = QuantizeScale(QuantType::kInt8, weight_min, weight_max);
  q->weights.assign(weights, weights + weight_count);
  q->bias.clear();
  if (bias != nullptr) {
    const float bias_scale = QuantizeScale(QuantType::kInt8, bias_min, bias_max);
    float rescale = data_scale * weight_scale / bias_scale;
    const float max_rescale = kInt32MaxAsFloat / 2 / MaxAbs(bias_min, bias_max) / bias_scale;
    if (rescale > max_rescale) {  // MXNet shrinks the weights to keep the bias in range
      rescale = max_rescale;
      const float weight_rescale = rescale * bias_scale / data_scale / weight_scale;
      for (auto& w : q->weights) {
        w = static_cast<int8_t>(std::max(-128, std::min(127, RoundAwayS32(w * weight_rescale))));
      }
      weight_scale *= weight_rescale;
    }
    q->bias.resize(out_channels);
    for (int64_t c = 0; c < out_channels; ++c) {
      q->bias[c] = RoundAwayS32(bias[c] * rescale);
    }
  }
  // MXNet's float order: the output scale over the data scale, then over the
  // weight scale; with a fused activation the output scale comes after it.
  const QuantType out_type = out.relu ? QuantType::kUint8 : QuantType::kInt8;
  q->post_scale = 1.f;
  if (out.quantized && !out.relu) {
    q->output_scale =
        QuantizeScale(out_type, out.min_calib, out.max_calib) / data_scale / weight_scale;
  } else {
    q->output_scale = static_cast<float>(1.0 / data_scale) / weight_scale;
    if (out.quantized) q->post_scale = QuantizeScale(out_type, out.min_calib, out.max_calib);
  }
  if (!std::isfinite(q->output_scale) || !std::isfinite(q->post_scale)) {
    *error = "the ranges of the fully connected op give a non-finite output scale";
    return false;
  }
  return true;
}

bool QuantizeFullyConnectedChannelWise(QuantType data_type, float data_min, float data_max,
                                       const float* weights, int64_t out_channels,
                                       int64_t per_channel, const float* bias,
                                       const FullyConnectedOutput& out,
                                       ChannelWiseFullyConnected* q, std::string* error) {
  const int64_t count = out_channels * per_channel;
  if (!AllFinite(weights, count, "weight", error)) return false;
  if (bias != nullptr && !AllFinite(bias, out_channels, "bias", error)) return false;
  for (float v : {data_min, data_max, out.min_calib, out.max_calib}) {
    if (!std::isfinite(v)) {
      *error = "a quantization range of the fully connected op is not finite";
      return false;
    }
  }
  const float data_scale = QuantizeScale(data_type, data_min, data_max);
  const std::vector<float> weight_scales =
      ChannelWeightScales(weights, out_channels, per_channel, bias, data_scale);
  q->weights.resize(count);
  for (int64_t c = 0; c < out_channels; ++c) {
    for (int64_t k = 0; k < per_channel; ++k) {
      q->weights[c * per_channel + k] =
          SaturateRoundS8(weights[c * per_channel + k] * weight_scales[c]);
    }
  }
  q->bias.clear();
  if (bias != nullptr) {
    q->bias.resize(out_channels);
    for (int64_t c = 0; c < out_channels; ++c) {
      q->bias[c] = SaturateRoundS32(bias[c] * (weight_scales[c] * data_scale));
    }
  }
  // MXNet's tmp_scale_: the output scale over the data scale, or (float
  // output, or a fused activation, which takes the output scale after it)
  // 1 / data scale in double; then over each channel's weight scale.
  const QuantType out_type = out.relu ? QuantType::kUint8 : QuantType::kInt8;
  float per_tensor;
  q->post_scale = 1.f;
  if (out.quantized && !out.relu) {
    per_tensor = QuantizeScale(out_type, out.min_calib, out.max_calib) / data_scale;
  } else {
    per_tensor = static_cast<float>(1.0 / data_scale);
    if (out.quantized) q->post_scale = QuantizeScale(out_type, out.min_calib, out.max_calib);
  }
  q->output_scales.resize(out_channels);
  for (int64_t c = 0; c < out_channels; ++c) {
    q->output_scales[c] = per_tensor / weight_scales[c];
    if (!std::isfinite(q->output_scales[c])) {
      *error = "the ranges of the fully connected op give a non-finite output scale";
      return false;
    }
  }
  if (!std::isfinite(q->post_scale)) {
    *error = "the ranges of the fully connected op give a non-finite output scale";
    return false;
  }
  return true;
}

}  // namespace region
}  // namespace bnq
