// libFuzzer harness for the library's input handling that needs neither
// MXNet nor oneDNN: attribute parsing, scale/shift folding and the graph
// pass's option parsing.  Built and run by `make fuzz` (clang, with ASan and
// UBSan); any crash, sanitizer report or broken invariant stops the run.
//
// The region's pure scale arithmetic (MXNet's quantized conv and fully
// connected ops, quantize and requantize with ranges measured at run time)
// is fuzzed on the same float bytes.
//
// Input layout: "key=value\n" lines for the attributes / options, then after
// a NUL byte the raw bytes of the per-channel parameters and ranges (floats).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <unordered_map>
#include <vector>

#include "../batch_norm_attrs.h"
#include "../pass_options.h"
#include "../region/quantized_conv_scales.h"
#include "../scale_shift_folding.h"

namespace {

std::unordered_map<std::string, std::string> ParseLines(const std::string& text) {
  std::unordered_map<std::string, std::string> map;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    const std::string line = text.substr(start, end - start);
    const size_t eq = line.find('=');
    if (eq != std::string::npos) map[line.substr(0, eq)] = line.substr(eq + 1);
    start = end + 1;
  }
  return map;
}

void Check(bool ok) {
  if (!ok) std::abort();
}

// QuantizeConv / QuantizeFullyConnected on fuzzed weights, bias and ranges:
// either an error, or int8 weights that use their range, finite scales.
void FuzzConvScales(const std::vector<float>& f) {
  namespace r = bnq::region;
  if (f.size() < 8) return;
  const int64_t out_channels = 1 + static_cast<int64_t>(f.size() % 3);
  const int64_t per_channel = (static_cast<int64_t>(f.size()) - 4 - out_channels) / out_channels;
  if (per_channel < 1) return;
  const float* weights = f.data() + 4;
  const float* bias = weights + out_channels * per_channel;
  for (int calibrated = 0; calibrated < 2; ++calibrated) {
    for (auto type : {bnq::QuantType::kInt8, bnq::QuantType::kUint8}) {
      const r::ConvOutput out{type,
                              f[0],
                              f[1],
                              calibrated == 1,
                              std::min(f[2], f[3]),
                              std::max(f[2], f[3]),
                              calibrated == 1 && f[2] >= 0};
      r::QuantizedConv q;
      std::string error;
      if (!r::QuantizeConv(out, out_channels, per_channel, weights, bias, &q, &error)) {
        Check(!error.empty());
        continue;
      }
      Check(q.weights.size() == static_cast<size_t>(out_channels * per_channel));
      Check(q.bias.size() == static_cast<size_t>(out_channels));
      Check(q.requantize.size() == (calibrated ? static_cast<size_t>(out_channels) : 1u));
      for (float v : q.requantize) Check(std::isfinite(v));
      for (int64_t c = 0; c < out_channels; ++c) {
        // Without a bias limiting it, a channel's largest weight maps to 127 or -128.
        float max_abs = 0.f;
        int max_q = 0;
        for (int64_t k = 0; k < per_channel; ++k) {
          max_abs = std::max(max_abs, std::fabs(weights[c * per_channel + k]));
          max_q = std::max(max_q, std::abs(static_cast<int>(q.weights[c * per_channel + k])));
        }
        if (calibrated && bias[c] == 0.f && max_abs > 1e-30f && max_abs < 1e30f) {
          Check(max_q >= 127);
        }
      }
    }
  }
  // Channel-wise fully connected: per-channel weights use their range.
  for (int relu = 0; relu < 2; ++relu) {
    r::ChannelWiseFullyConnected cw;
    std::string cw_error;
    const r::FullyConnectedOutput out{relu == 1, relu == 1, 0.f, std::fabs(f[2])};
    if (!r::QuantizeFullyConnectedChannelWise(bnq::QuantType::kUint8, 0.f, std::fabs(f[0]), weights,
                                              out_channels, per_channel, bias, out, &cw,
                                              &cw_error)) {
      Check(!cw_error.empty());
      continue;
    }
    Check(cw.weights.size() == static_cast<size_t>(out_channels * per_channel));
    Check(cw.output_scales.size() == static_cast<size_t>(out_channels));
    for (float v : cw.output_scales) Check(std::isfinite(v));
  }
  // The arithmetic of ranges measured at run time.
  for (auto type : {bnq::QuantType::kInt8, bnq::QuantType::kUint8}) {
    r::Int32ConvOutput o;
    r::Int32ConvOutputFor(type, f[0], f[1], f[2], f[3], bias, out_channels, &o);
    Check(o.bias.size() == static_cast<size_t>(out_channels));
    Check(std::isnan(o.max_output) || o.min_output == -o.max_output);
    const r::Requantized q = r::QuantizeFloat(type, std::min(f[0], f[1]), std::max(f[0], f[1]));
    if (type == bnq::QuantType::kInt8) Check(!(q.min > q.max));
  }
  // Uncalibrated requantize: the data's largest magnitude lands on the
  // type's largest level (up to float rounding).
  const float data_max = std::fabs(f[0]) < 2.1e9f ? std::fabs(std::nearbyint(f[0])) : 1e9f;
  const float in_range = std::fabs(f[1]);
  if (data_max >= 1.f && std::isfinite(in_range) && in_range > 1e-20f && in_range < 1e20f) {
    const r::Requantized q = r::RequantizeInt32(bnq::QuantType::kInt8, -in_range, in_range, false,
                                                0.f, 0.f, -data_max, data_max / 2);
    Check(std::fabs(data_max * q.scale - 127.f) <= 127.f * 1e-5f && q.min == -q.max);
  }
  std::vector<int8_t> w8(static_cast<size_t>(out_channels * per_channel));
  std::vector<int8_t> b8(static_cast<size_t>(out_channels));
  for (size_t i = 0; i < w8.size(); ++i) w8[i] = static_cast<int8_t>(i * 37);
  for (size_t i = 0; i < b8.size(); ++i) b8[i] = static_cast<int8_t>(i * 91 - 100);
  r::QuantizedFullyConnected fc;
  std::string error;
  if (!r::QuantizeFullyConnected(bnq::QuantType::kUint8, 0.f, std::fabs(f[0]), w8.data(),
                                 static_cast<int64_t>(w8.size()), -std::fabs(f[1]), std::fabs(f[1]),
                                 b8.data(), out_channels, -std::fabs(f[2]), std::fabs(f[2]),
                                 r::FullyConnectedOutput{}, &fc, &error)) {
    Check(!error.empty());
    return;
  }
  Check(std::isfinite(fc.output_scale) && fc.weights.size() == w8.size());
}

}  // namespace

// The concat fold: two parts (int8, then uint8 in another range) share one
// output range, each with finite factors; one part is FoldScaleShift itself.
void FuzzConcatFold(const bnq::BatchNormAttrs& attrs, const bnq::ChannelParams& params,
                    float min_data, float max_data) {
  const auto out = bnq::FusedOutputType(attrs.act);
  std::vector<bnq::FoldedScaleShift> folded;
  std::string error;
  const bnq::ConcatInput whole{params.channels, min_data, max_data, bnq::QuantType::kInt8};
  bnq::FoldedScaleShift single;
  std::string single_error;
  const bool single_ok = bnq::FoldScaleShift(attrs, params, min_data, max_data,
                                             bnq::QuantType::kInt8, out, &single, &single_error);
  const bool one_ok = bnq::FoldConcatScaleShift(attrs, params, {whole}, out, &folded, &error);
  Check(one_ok == single_ok && (one_ok || !error.empty()));
  if (one_ok) {
    Check(folded.size() == 1 && folded[0].scale == single.scale &&
          folded[0].shift == single.shift && folded[0].min_output == single.min_output &&
          folded[0].max_output == single.max_output);
  }
  if (params.channels < 2) return;
  const int64_t first = params.channels / 2;
  const std::vector<bnq::ConcatInput> parts = {
      {first, min_data, max_data, bnq::QuantType::kInt8},
      {params.channels - first, 0.f, std::fabs(max_data) * 0.25f, bnq::QuantType::kUint8}};
  error.clear();
  if (!bnq::FoldConcatScaleShift(attrs, params, parts, out, &folded, &error)) {
    Check(!error.empty());
    return;
  }
  Check(folded.size() == 2 && folded[0].scale.size() == static_cast<size_t>(first) &&
        folded[1].scale.size() == static_cast<size_t>(params.channels - first));
  Check(folded[0].min_output == folded[1].min_output &&
        folded[0].max_output == folded[1].max_output &&
        folded[0].min_output <= folded[0].max_output);
  for (const auto& f : folded) {
    for (size_t c = 0; c < f.scale.size(); ++c) {
      Check(std::isfinite(f.scale[c]) && std::isfinite(f.shift[c]));
    }
  }
  // Channel counts that do not add up are an error, not a read past the parameters.
  error.clear();
  Check(!bnq::FoldConcatScaleShift(attrs, params, {parts[0]}, out, &folded, &error) &&
        !error.empty());
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const char* bytes = reinterpret_cast<const char*>(data);
  const size_t split = std::find(bytes, bytes + size, '\0') - bytes;
  const auto options = ParseLines(std::string(bytes, split));

  std::string error;
  bnq::PassOptions pass_options;
  if (!bnq::ParsePassOptions(options, &pass_options, &error)) Check(!error.empty());

  error.clear();
  bnq::ConcatBatchNormAttrs concat_attrs;
  if (bnq::ParseConcatBatchNormAttrs(options, &concat_attrs, &error)) {
    Check(concat_attrs.num_args >= 1 && concat_attrs.num_args <= 1024);
  } else {
    Check(!error.empty());
  }
  // The same with an average pooling between the concat and the BatchNorm.
  error.clear();
  if (bnq::ParseConcatBatchNormAttrs(options, &concat_attrs, &error, /*avg_pool=*/true)) {
    Check(concat_attrs.avg_pool && !concat_attrs.pool.max && concat_attrs.bn.axis == 1 &&
          concat_attrs.dim == 1);
  } else {
    Check(!error.empty());
  }

  // The pooling + BatchNorm op's attributes: parsed or refused with a reason.
  bnq::AvgPoolBatchNormAttrs pool_bn;
  error.clear();
  if (!bnq::ParseAvgPoolBatchNormAttrs(options, &pool_bn, &error)) {
    Check(!error.empty());
  } else {
    Check(pool_bn.bn.axis == 1 && !pool_bn.pool.max && !pool_bn.pool.kernel.empty());
  }

  error.clear();
  bnq::BatchNormAttrs attrs;
  // The _act ops' attributes when the input names an act_type.
  if (!bnq::ParseBatchNormAttrs(options, &attrs, &error, options.count("act_type") > 0)) {
    Check(!error.empty());
    return 0;
  }
  Check(std::isfinite(attrs.eps) && std::isfinite(attrs.momentum));
  Check(!attrs.has_calib_range || attrs.min_calib_range <= attrs.max_calib_range);

  // Channel parameters and ranges from the remaining bytes.
  std::vector<float> floats((size - std::min(size, split + 1)) / sizeof(float));
  if (!floats.empty()) std::memcpy(floats.data(), bytes + split + 1, floats.size() * sizeof(float));
  FuzzConvScales(floats);
  if (floats.size() < 6) return 0;
  const int64_t channels = (floats.size() - 2) / 4;
  const float* p = floats.data() + 2;
  const bnq::ChannelParams params{p, p + channels, p + 2 * channels, p + 3 * channels, channels};
  bnq::FusedActivation relu;
  relu.kind = bnq::FusedActivation::Kind::kRelu;
  for (const bnq::FusedActivation& act : {attrs.act, relu}) {
    attrs.act = act;
    FuzzConcatFold(attrs, params, floats[0], floats[1]);
    const auto out = bnq::FusedOutputType(act);
    for (auto in : {bnq::QuantType::kInt8, bnq::QuantType::kUint8}) {
      bnq::FoldedScaleShift folded;
      error.clear();
      if (!bnq::FoldScaleShift(attrs, params, floats[0], floats[1], in, out, &folded, &error)) {
        Check(!error.empty());
        continue;
      }
      Check(folded.scale.size() == static_cast<size_t>(channels));
      Check(std::isfinite(folded.min_output) && std::isfinite(folded.max_output));
      Check(folded.min_output <= folded.max_output);
      Check(std::isfinite(folded.negative_slope) && folded.clamp_lo <= folded.clamp_hi);
      // A curve sees real values and is scaled into levels after it.
      Check(bnq::IsCurve(act)
                ? folded.curve == act.kind
                : folded.curve == bnq::FusedActivation::Kind::kNone && folded.output_scale == 1.f);
      Check(std::isfinite(folded.output_scale) && folded.output_scale >= 0.f);
      // The mean kernel works in levels: a curve before a mean is refused.
      bnq::FoldedScaleShift pooled;
      std::string pooled_error;
      if (bnq::IsCurve(act)) {
        Check(!bnq::FoldScaleShift(attrs, params, floats[0], floats[1], in, out, &pooled,
                                   &pooled_error, true) &&
              !pooled_error.empty());
      }
      for (int64_t c = 0; c < channels; ++c) {
        Check(std::isfinite(folded.scale[c]) && std::isfinite(folded.shift[c]));
        // The kernel computes q * scale + shift in float32 for |q| <= 255.
        Check(std::isfinite(255.0f * std::fabs(folded.scale[c]) + std::fabs(folded.shift[c])));
      }
    }
    // float32 input: needs the calibrated range, gives finite factors.
    bnq::FoldedScaleShift folded;
    error.clear();
    if (!bnq::FoldScaleShiftFloatInput(attrs, params, out, &folded, &error)) {
      Check(!error.empty());
      continue;
    }
    Check(attrs.has_calib_range && folded.scale.size() == static_cast<size_t>(channels));
    Check(folded.min_output <= folded.max_output &&
          (out == bnq::QuantType::kInt8 || folded.min_output == 0.f));
    for (int64_t c = 0; c < channels; ++c) {
      Check(std::isfinite(folded.scale[c]) && std::isfinite(folded.shift[c]));
    }
    // Followed by a mean: the same factors, explicit bounds; a curve refused.
    bnq::FoldedScaleShift pooled;
    std::string pooled_error;
    const bool pooled_ok =
        bnq::FoldScaleShiftFloatInput(attrs, params, out, &pooled, &pooled_error, true);
    Check(pooled_ok != bnq::IsCurve(act) && pooled_ok == pooled_error.empty());
    if (pooled_ok) {
      Check(pooled.scale == folded.scale && pooled.shift == folded.shift &&
            pooled.min_output == folded.min_output && pooled.max_output == folded.max_output);
    }
  }
  return 0;
}
