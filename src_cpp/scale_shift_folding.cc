#include "scale_shift_folding.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>

namespace bnq {
namespace {

// Keeps q * scale + shift finite in float32 for |q| <= 255 (a range so tiny
// that the factor overflows saturates instead of producing inf or NaN).
constexpr double kMaxFactor = 1e35;

float ClampToFactor(double v) {
  return static_cast<float>(std::max(-kMaxFactor, std::min(kMaxFactor, v)));
}

std::string ChannelError(const char* what, int64_t c, double value) {
  std::ostringstream os;
  os << what << " of channel " << c << " is " << value;
  return os.str();
}

}  // namespace

float QuantizedRange(QuantType t) { return t == QuantType::kInt8 ? 127.5f : 255.5f; }

QuantType FusedOutputType(const FusedActivation& act) {
  return NonNegative(act) ? QuantType::kUint8 : QuantType::kInt8;
}

namespace {

bool CheckOutputType(const BatchNormAttrs& attrs, QuantType out_type, std::string* error) {
  if (out_type == FusedOutputType(attrs.act)) return true;
  *error = out_type == QuantType::kInt8 ? "an activation that cannot be negative needs uint8 output"
                                        : "output that can be negative needs int8";
  return false;
}

// Real BatchNorm as y = a[c] * x + b[c], in double.
bool BatchNormAffine(const BatchNormAttrs& attrs, const ChannelParams& params,
                     std::vector<double>* a, std::vector<double>* b, std::string* error) {
  const int64_t channels = params.channels;
  a->resize(channels);
  b->resize(channels);
  for (int64_t c = 0; c < channels; ++c) {
    const double gamma = attrs.fix_gamma ? 1.0 : params.gamma[c];
    const double var_eps = static_cast<double>(params.moving_var[c]) + attrs.eps;
    if (!std::isfinite(gamma)) {
      *error = ChannelError("gamma", c, gamma);
      return false;
    }
    if (!std::isfinite(params.beta[c])) {
      *error = ChannelError("beta", c, params.beta[c]);
      return false;
    }
    if (!std::isfinite(params.moving_mean[c])) {
      *error = ChannelError("moving_mean", c, params.moving_mean[c]);
      return false;
    }
    if (!(var_eps > 0) || !std::isfinite(var_eps)) {
      *error = ChannelError("moving_var + eps (must be positive and finite)", c, var_eps);
      return false;
    }
    (*a)[c] = gamma / std::sqrt(var_eps);
    (*b)[c] = params.beta[c] - params.moving_mean[c] * (*a)[c];
  }
  return true;
}

// The calibrated output range: sets min/max_output, returns the range that
// maps to the type's QuantizedRange().
double CalibratedOutputRange(const BatchNormAttrs& attrs, FoldedScaleShift* folded) {
  if (NonNegative(attrs.act)) {
    folded->min_output = 0.f;
    folded->max_output = std::max(0.f, attrs.max_calib_range);
    return folded->max_output;
  }
  folded->min_output = attrs.min_calib_range;
  folded->max_output = attrs.max_calib_range;
  return std::max(std::fabs(attrs.min_calib_range), std::fabs(attrs.max_calib_range));
}

// The activation in levels (`levels_per_unit` > 0): clamp bounds only where
// saturation to the type's limits does not already clip.  When a mean
// follows, the values are averaged before they saturate: ReLU and clip
// bounds always apply.
void FillActivation(const FusedActivation& act, double levels_per_unit, QuantType out_type,
                    bool mean_follows, FoldedScaleShift* folded) {
  using Kind = FusedActivation::Kind;
  if (act.kind == Kind::kLeaky) folded->negative_slope = act.slope;
  if (act.kind == Kind::kRelu && mean_follows) folded->clamp_lo = 0.f;
  if (act.kind != Kind::kClip || levels_per_unit <= 0) return;
  const double inf = std::numeric_limits<double>::infinity();
  const double q_lo = mean_follows ? -inf : out_type == QuantType::kInt8 ? -128.0 : 0.0;
  const double q_hi = mean_follows ? inf : out_type == QuantType::kInt8 ? 127.0 : 255.0;
  const double lo = act.a_min * levels_per_unit, hi = act.a_max * levels_per_unit;
  // A bound at or beyond the type's limit clips nothing that saturation does
  // not: both round and saturate to the limit.
  if (lo > q_lo) folded->clamp_lo = static_cast<float>(std::min(lo, q_hi + 1.0));
  if (hi < q_hi) folded->clamp_hi = static_cast<float>(std::max(hi, q_lo - 1.0));
}

// q_out = (a * x + b) / step_out with x = q_in * step_in; a zero output range
// maps everything to 0.  With a curve the map stops at a * x + b (real
// values) and output_scale = 1 / step_out follows the curve.
void FillScaleShift(const std::vector<double>& a, const std::vector<double>& b, double step_in,
                    double range_out, QuantType out_type, const FusedActivation& act,
                    bool mean_follows, FoldedScaleShift* folded) {
  const double levels_per_unit = range_out > 0 ? QuantizedRange(out_type) / range_out : 0.0;
  FillActivation(act, levels_per_unit, out_type, mean_follows, folded);
  double map_levels = levels_per_unit;
  if (IsCurve(act)) {
    folded->curve = act.kind;
    folded->output_scale = ClampToFactor(levels_per_unit);
    map_levels = 1.0;
  }
  folded->scale.resize(a.size());
  folded->shift.resize(a.size());
  for (size_t c = 0; c < a.size(); ++c) {
    folded->scale[c] = ClampToFactor(a[c] * step_in * map_levels);
    folded->shift[c] = ClampToFactor(b[c] * map_levels);
  }
}

// The least and greatest act(y) over y in [lo, hi] (which holds 0).  The
// linear activations have their kinks at 0 or at the clip bounds, and the
// curves are monotonic except gelu, whose minimum is inside: the extremes
// are at the ends, at 0, or at gelu's minimum.
void ActivationExtremes(const FusedActivation& act, double lo, double hi, double* act_lo,
                        double* act_hi) {
  std::vector<double> ys = {lo, hi, 0.0};
  constexpr double kGeluArgMin = -0.751791524693564457;  // where d/dy gelu(y) = 0
  if (act.kind == FusedActivation::Kind::kGelu && lo < kGeluArgMin) ys.push_back(kGeluArgMin);
  *act_lo = std::numeric_limits<double>::infinity();
  *act_hi = -std::numeric_limits<double>::infinity();
  for (double y : ys) {
    *act_lo = std::min(*act_lo, Activate(act, y));
    *act_hi = std::max(*act_hi, Activate(act, y));
  }
  *act_lo = std::min(*act_lo, 0.0);
  *act_hi = std::max(*act_hi, 0.0);
}

}  // namespace

bool FoldScaleShift(const BatchNormAttrs& attrs, const ChannelParams& params, float min_data,
                    float max_data, QuantType in_type, QuantType out_type, FoldedScaleShift* folded,
                    std::string* error, bool mean_follows) {
  if (!std::isfinite(min_data) || !std::isfinite(max_data)) {
    *error = "min_data/max_data must be finite, got [" + std::to_string(min_data) + ", " +
             std::to_string(max_data) + "]";
    return false;
  }
  if (min_data > max_data) {
    *error = "min_data (" + std::to_string(min_data) + ") is greater than max_data (" +
             std::to_string(max_data) + ")";
    return false;
  }
  if (!CheckOutputType(attrs, out_type, error)) return false;
  if (mean_follows && IsCurve(attrs.act)) {
    *error = "global average pooling after a curve (sigmoid, tanh, softrelu, gelu) is not fused";
    return false;
  }
  std::vector<double> a, b;
  if (!BatchNormAffine(attrs, params, &a, &b, error)) return false;

  // Input: real = q * step_in, q within the type's integer limits.
  const double range_in = std::max(std::fabs(min_data), std::fabs(max_data));
  const double step_in = range_in / QuantizedRange(in_type);

  // Output range: calibrated, or the extreme values the op can produce.
  double range_out;
  if (attrs.has_calib_range) {
    range_out = CalibratedOutputRange(attrs, folded);
  } else {
    const double q_lo = in_type == QuantType::kInt8 ? -128.0 : 0.0;
    const double q_hi = in_type == QuantType::kInt8 ? 127.0 : 255.0;
    double lo = 0.0, hi = 0.0;
    for (size_t c = 0; c < a.size(); ++c) {
      const double y1 = a[c] * q_lo * step_in + b[c];
      const double y2 = a[c] * q_hi * step_in + b[c];
      lo = std::min(lo, std::min(y1, y2));
      hi = std::max(hi, std::max(y1, y2));
    }
    double act_lo = 0.0, act_hi = 0.0;
    ActivationExtremes(attrs.act, lo, hi, &act_lo, &act_hi);
    const bool unsigned_out = out_type == QuantType::kUint8;
    range_out = unsigned_out ? act_hi : std::max(std::fabs(act_lo), act_hi);
    if (!std::isfinite(range_out) || range_out > 3.0e38) {
      *error = "derived output range overflows float32";
      return false;
    }
    folded->min_output = unsigned_out ? 0.f : static_cast<float>(-range_out);
    folded->max_output = static_cast<float>(range_out);
  }
  FillScaleShift(a, b, step_in, range_out, out_type, attrs.act, mean_follows, folded);
  return true;
}

bool FoldScaleShiftFloatInput(const BatchNormAttrs& attrs, const ChannelParams& params,
                              QuantType out_type, FoldedScaleShift* folded, std::string* error,
                              bool mean_follows) {
  if (!attrs.has_calib_range) {
    *error = "float32 input needs a calibrated output range (min_calib_range, max_calib_range)";
    return false;
  }
  if (!CheckOutputType(attrs, out_type, error)) return false;
  if (mean_follows && IsCurve(attrs.act)) {
    *error = "global average pooling after a curve (sigmoid, tanh, softrelu, gelu) is not fused";
    return false;
  }
  std::vector<double> a, b;
  if (!BatchNormAffine(attrs, params, &a, &b, error)) return false;
  FillScaleShift(a, b, 1.0, CalibratedOutputRange(attrs, folded), out_type, attrs.act, mean_follows,
                 folded);
  return true;
}

namespace {

// The parameters of channels [begin, begin + channels) of `params`.
ChannelParams ChannelSlice(const ChannelParams& params, int64_t begin, int64_t channels) {
  return {params.gamma + begin, params.beta + begin, params.moving_mean + begin,
          params.moving_var + begin, channels};
}

// Names the input (and where its channels start) of a folding error.
std::string InputError(size_t input, int64_t first_channel, const std::string& error) {
  return "concatenated input " + std::to_string(input) + " (channels from " +
         std::to_string(first_channel) + "): " + error;
}

}  // namespace

bool FoldConcatScaleShift(const BatchNormAttrs& attrs, const ChannelParams& params,
                          const std::vector<ConcatInput>& inputs, QuantType out_type,
                          std::vector<FoldedScaleShift>* folded, std::string* error,
                          bool mean_follows) {
  int64_t total = 0;
  for (const ConcatInput& in : inputs) {
    if (in.channels <= 0) {
      *error = "every concatenated input needs at least one channel";
      return false;
    }
    total += in.channels;
  }
  if (inputs.empty() || total != params.channels) {
    *error = "the concatenated inputs have " + std::to_string(total) + " channels, the BatchNorm " +
             std::to_string(params.channels);
    return false;
  }
  BatchNormAttrs shared = attrs;
  // One input is the single-input op exactly (its derived range stays in
  // double; the union below is the float range the op writes out).
  if (!attrs.has_calib_range && inputs.size() > 1) {
    // The union of the ranges derived for each input becomes the one range.
    float lo = 0.f, hi = 0.f;
    int64_t begin = 0;
    for (const ConcatInput& in : inputs) {
      FoldedScaleShift f;
      if (!FoldScaleShift(attrs, ChannelSlice(params, begin, in.channels), in.min_data, in.max_data,
                          in.type, out_type, &f, error, mean_follows)) {
        *error = InputError(&in - inputs.data(), begin, *error);
        return false;
      }
      lo = std::min(lo, f.min_output);
      hi = std::max(hi, f.max_output);
      begin += in.channels;
    }
    shared.has_calib_range = true;
    shared.min_calib_range = lo;
    shared.max_calib_range = hi;
  }
  folded->assign(inputs.size(), FoldedScaleShift());
  int64_t begin = 0;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const ConcatInput& in = inputs[i];
    if (!FoldScaleShift(shared, ChannelSlice(params, begin, in.channels), in.min_data, in.max_data,
                        in.type, out_type, &(*folded)[i], error, mean_follows)) {
      *error = InputError(i, begin, *error);
      return false;
    }
    begin += in.channels;
  }
  return true;
}

}  // namespace bnq
