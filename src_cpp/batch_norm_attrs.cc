#include "batch_norm_attrs.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "number_parsing.h"

namespace bnq {
namespace {

// dmlc::optional<float> is written as "None" when unset.
bool ParseOptionalFloat(const std::string& text, bool* present, float* value) {
  if (Trim(text) == "None") {
    *present = false;
    return true;
  }
  double v = 0;
  if (!ParseDecimal(text, &v) || !std::isfinite(v) ||
      std::fabs(v) > std::numeric_limits<float>::max()) {
    return false;
  }
  *present = true;
  *value = static_cast<float>(v);
  return true;
}

bool ParseFiniteFloat(const std::string& text, float* value) {
  bool present = false;
  return ParseOptionalFloat(text, &present, value) && present;
}

using Kind = FusedActivation::Kind;

struct ActivationName {
  const char* act_type;
  Kind kind;
};
constexpr ActivationName kActivationNames[] = {
    {"relu", Kind::kRelu},       {"clip", Kind::kClip}, {"leaky", Kind::kLeaky},
    {"sigmoid", Kind::kSigmoid}, {"tanh", Kind::kTanh}, {"softrelu", Kind::kSoftRelu},
    {"gelu", Kind::kGelu}};
constexpr char kActivationList[] =
    "'relu', 'clip', 'leaky', 'sigmoid', 'tanh', 'softrelu' or 'gelu'";

// Checks that the activation's keys fit its act_type.
bool CheckActivation(const std::unordered_map<std::string, std::string>& attrs,
                     const std::string& act_type, FusedActivation* act, std::string* error) {
  if (act_type.empty()) {
    *error = std::string("act_type is required (") + kActivationList + ")";
    return false;
  }
  act->kind = ActivationKind(act_type);
  if (act->kind == Kind::kNone) {
    *error = "unsupported act_type '" + act_type + "' (expected " + kActivationList + ")";
    return false;
  }
  const bool clip = act->kind == Kind::kClip;
  if (clip != (attrs.count("a_min") == 1) || clip != (attrs.count("a_max") == 1)) {
    *error = clip ? "act_type='clip' needs a_min and a_max"
                  : "a_min and a_max are attributes of act_type='clip'";
    return false;
  }
  if (attrs.count("slope") && act->kind != Kind::kLeaky) {
    *error = "slope is an attribute of act_type='leaky'";
    return false;
  }
  if (clip && act->a_min > act->a_max) {
    *error = "a_min (" + std::to_string(act->a_min) + ") is greater than a_max (" +
             std::to_string(act->a_max) + ")";
    return false;
  }
  return true;
}

}  // namespace

FusedActivation::Kind ActivationKind(const std::string& act_type) {
  for (const ActivationName& name : kActivationNames) {
    if (act_type == name.act_type) return name.kind;
  }
  return Kind::kNone;
}

bool NonNegative(const FusedActivation& act) {
  return act.kind == Kind::kRelu || act.kind == Kind::kSigmoid || act.kind == Kind::kSoftRelu ||
         (act.kind == Kind::kClip && act.a_min >= 0) ||
         (act.kind == Kind::kLeaky && act.slope <= 0);
}

bool IsCurve(const FusedActivation& act) {
  return act.kind == Kind::kSigmoid || act.kind == Kind::kTanh || act.kind == Kind::kSoftRelu ||
         act.kind == Kind::kGelu;
}

bool CheckActivationBeforeMean(const FusedActivation& act,
                               const std::unordered_map<std::string, std::string>& attrs,
                               std::string* error) {
  if (!IsCurve(act)) return true;
  *error = "act_type '" + attrs.at("act_type") +
           "' cannot be fused with global average pooling (relu, clip or leaky can)";
  return false;
}

double Activate(const FusedActivation& act, double y) {
  switch (act.kind) {
    case Kind::kRelu:
      return std::max(y, 0.0);
    case Kind::kClip:
      return std::min(std::max(y, static_cast<double>(act.a_min)), static_cast<double>(act.a_max));
    case Kind::kLeaky:
      return y < 0 ? y * act.slope : y;
    case Kind::kSigmoid:
      return 1.0 / (1.0 + std::exp(-y));
    case Kind::kTanh:
      return std::tanh(y);
    case Kind::kSoftRelu:  // MXNet's: the identity above 20, where they agree in float
      return y > 20.0 ? y : std::log1p(std::exp(y));
    case Kind::kGelu:
      return 0.5 * y * (1.0 + std::erf(y / std::sqrt(2.0)));
    case Kind::kNone:
      break;
  }
  return y;
}

bool ParseBatchNormAttrs(const std::unordered_map<std::string, std::string>& attrs,
                         BatchNormAttrs* out, std::string* error, bool with_activation) {
  BatchNormAttrs parsed;
  bool has_min = false, has_max = false;
  std::string act_type;
  for (const auto& kv : attrs) {
    const std::string& key = kv.first;
    const std::string& val = kv.second;
    bool ok = true;
    const bool act_key = key == "act_type" || key == "a_min" || key == "a_max" || key == "slope";
    if (act_key && !with_activation) {
      *error = "unknown attribute '" + key + "' (the _act ops take the activation)";
      return false;
    }
    if (key == "act_type") {
      act_type = Trim(val);
    } else if (key == "a_min") {
      ok = ParseFiniteFloat(val, &parsed.act.a_min);
    } else if (key == "a_max") {
      ok = ParseFiniteFloat(val, &parsed.act.a_max);
    } else if (key == "slope") {
      ok = ParseFiniteFloat(val, &parsed.act.slope);
    } else if (key == "eps") {
      ok = ParseDecimal(val, &parsed.eps) && std::isfinite(parsed.eps);
    } else if (key == "momentum") {
      ok = ParseDecimal(val, &parsed.momentum) && std::isfinite(parsed.momentum);
    } else if (key == "fix_gamma") {
      ok = ParseBool(val, &parsed.fix_gamma);
    } else if (key == "use_global_stats") {
      ok = ParseBool(val, &parsed.use_global_stats);
    } else if (key == "output_mean_var") {
      ok = ParseBool(val, &parsed.output_mean_var);
    } else if (key == "axis") {
      ok = ParseInteger(val, &parsed.axis);
    } else if (key == "cudnn_off") {
      ok = ParseBool(val, &parsed.cudnn_off);
    } else if (key == "min_calib_range") {
      ok = ParseOptionalFloat(val, &has_min, &parsed.min_calib_range);
    } else if (key == "max_calib_range") {
      ok = ParseOptionalFloat(val, &has_max, &parsed.max_calib_range);
    } else if (IsHiddenAttribute(key)) {
      continue;
    } else {
      *error = "unknown attribute '" + key + "'";
      return false;
    }
    if (!ok) {
      *error = "cannot parse attribute " + key + "='" + val + "'";
      return false;
    }
  }
  if (has_min != has_max) {
    *error = "min_calib_range and max_calib_range must be given together";
    return false;
  }
  if (has_min && parsed.min_calib_range > parsed.max_calib_range) {
    *error = "min_calib_range (" + std::to_string(parsed.min_calib_range) +
             ") is greater than max_calib_range (" + std::to_string(parsed.max_calib_range) + ")";
    return false;
  }
  parsed.has_calib_range = has_min;
  if (with_activation && !CheckActivation(attrs, act_type, &parsed.act, error)) return false;
  *out = parsed;
  return true;
}

namespace {

// Splits `attrs` into Pooling's keys and the rest.  (cudnn_off is both
// ops' attribute: the BatchNorm parses it.)
void SplitPoolingAttrs(const std::unordered_map<std::string, std::string>& attrs,
                       std::unordered_map<std::string, std::string>* pool_attrs,
                       std::unordered_map<std::string, std::string>* rest) {
  for (const auto& kv : attrs) {
    const std::string& key = kv.first;
    const bool pooling = key == "kernel" || key == "stride" || key == "pad" || key == "pool_type" ||
                         key == "global_pool" || key == "pooling_convention" ||
                         key == "count_include_pad" || key == "layout" || key == "p_value";
    (pooling ? *pool_attrs : *rest)[key] = kv.second;
  }
}

// Pooling's keys of an average pooling (pool_type 'avg' or absent).
bool ParseAvgPoolingAttrs(std::unordered_map<std::string, std::string> pool_attrs,
                          PoolingAttrs* pool, std::string* error) {
  auto type = pool_attrs.find("pool_type");
  if (type != pool_attrs.end() && Trim(type->second) != "avg") {
    *error = "pool_type must be 'avg', got '" + type->second + "'";
    return false;
  }
  pool_attrs["pool_type"] = "avg";
  return ParsePoolingAttrs(pool_attrs, pool, error);
}

// Any of the activation's keys makes act_type required.
bool HasActivationKeys(const std::unordered_map<std::string, std::string>& attrs) {
  for (const char* key : {"act_type", "a_min", "a_max", "slope"}) {
    if (attrs.count(key) > 0) return true;
  }
  return false;
}

}  // namespace

bool ParseConcatBatchNormAttrs(const std::unordered_map<std::string, std::string>& attrs,
                               ConcatBatchNormAttrs* out, std::string* error, bool avg_pool) {
  ConcatBatchNormAttrs parsed;
  std::unordered_map<std::string, std::string> pool_attrs, bn_attrs;
  if (avg_pool) {
    SplitPoolingAttrs(attrs, &pool_attrs, &bn_attrs);
    if (!ParseAvgPoolingAttrs(pool_attrs, &parsed.pool, error)) return false;
    parsed.avg_pool = true;
  } else {
    bn_attrs = attrs;
  }
  auto num_args = bn_attrs.find("num_args");
  if (num_args == bn_attrs.end()) {
    *error = "num_args (the number of concatenated inputs) is required";
    return false;
  }
  if (!ParseInteger(num_args->second, &parsed.num_args) || parsed.num_args < 1 ||
      parsed.num_args > 1024) {
    *error = "num_args must be an integer from 1 to 1024, got '" + num_args->second + "'";
    return false;
  }
  bn_attrs.erase(num_args);
  auto dim = bn_attrs.find("dim");
  if (dim != bn_attrs.end()) {
    if (!ParseInteger(dim->second, &parsed.dim)) {
      *error = "cannot parse attribute dim='" + dim->second + "'";
      return false;
    }
    bn_attrs.erase(dim);
  }
  if (!ParseBatchNormAttrs(bn_attrs, &parsed.bn, error, HasActivationKeys(bn_attrs))) return false;
  if (avg_pool && (parsed.bn.axis != 1 || parsed.dim != 1)) {
    *error = "axis and dim must be 1 (the channels of NCHW data) before an average pooling, got " +
             std::to_string(parsed.bn.axis) + " and " + std::to_string(parsed.dim);
    return false;
  }
  *out = parsed;
  return true;
}

bool ParseAvgPoolBatchNormAttrs(const std::unordered_map<std::string, std::string>& attrs,
                                AvgPoolBatchNormAttrs* out, std::string* error) {
  AvgPoolBatchNormAttrs parsed;
  std::unordered_map<std::string, std::string> pool_attrs, bn_attrs;
  SplitPoolingAttrs(attrs, &pool_attrs, &bn_attrs);
  if (!ParseAvgPoolingAttrs(pool_attrs, &parsed.pool, error)) return false;
  if (!ParseBatchNormAttrs(bn_attrs, &parsed.bn, error, HasActivationKeys(bn_attrs))) return false;
  if (parsed.bn.axis != 1 && parsed.bn.axis != -3) {
    *error = "axis must be 1 (the channels of NCHW data), got " + std::to_string(parsed.bn.axis);
    return false;
  }
  parsed.bn.axis = 1;
  *out = parsed;
  return true;
}

bool ResolveAxis(int axis, int ndim, int* resolved) {
  const int a = axis < 0 ? axis + ndim : axis;
  if (a < 0 || a >= ndim) return false;
  *resolved = a;
  return true;
}

}  // namespace bnq
