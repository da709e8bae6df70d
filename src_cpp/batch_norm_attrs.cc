#include "batch_norm_attrs.h"

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

bool IsHidden(const std::string& key) {
  return key.size() > 4 && key.compare(0, 2, "__") == 0 &&
         key.compare(key.size() - 2, 2, "__") == 0;
}

}  // namespace

bool ParseBatchNormAttrs(const std::unordered_map<std::string, std::string>& attrs,
                         BatchNormAttrs* out, std::string* error) {
  BatchNormAttrs parsed;
  bool has_min = false, has_max = false;
  for (const auto& kv : attrs) {
    const std::string& key = kv.first;
    const std::string& val = kv.second;
    bool ok = true;
    if (key == "eps") {
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
    } else if (IsHidden(key)) {
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
