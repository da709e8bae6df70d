#include "pass_options.h"

#include <cmath>
#include <sstream>
#include <vector>

#include "number_parsing.h"

namespace bnq {
namespace {

std::vector<std::string> Split(const std::string& text, char sep) {
  std::vector<std::string> parts;
  std::string part;
  std::istringstream is(text);
  while (std::getline(is, part, sep)) {
    if (!part.empty()) parts.push_back(part);
  }
  return parts;
}

bool ParseFloat(const std::string& s, float* value) {
  double v = 0;
  if (!ParseDecimal(s, &v) || std::fabs(v) > 3.0e38) return false;
  *value = static_cast<float>(v);
  return true;
}

// "name=min:max;..." (the last '=' splits, so names may contain '=').
bool ParseRanges(const std::string& key, const std::string& text,
                 std::map<std::string, std::pair<float, float>>* ranges, std::string* error) {
  for (const std::string& item : Split(text, ';')) {
    const size_t eq = item.rfind('=');
    const size_t colon = item.rfind(':');
    float lo = 0, hi = 0;
    if (eq == std::string::npos || eq == 0 || colon == std::string::npos || colon < eq ||
        !ParseFloat(item.substr(eq + 1, colon - eq - 1), &lo) ||
        !ParseFloat(item.substr(colon + 1), &hi) || lo > hi) {
      *error =
          "option " + key + ": malformed entry '" + item + "' (expected name=min:max, min <= max)";
      return false;
    }
    (*ranges)[item.substr(0, eq)] = {lo, hi};
  }
  return true;
}

bool ParseFlag(const std::string& key, const std::string& text, bool* value, std::string* error) {
  if (ParseBool(text, value)) return true;
  *error = "option " + key + ": expected true or false, got '" + text + "'";
  return false;
}

}  // namespace

bool ParsePassOptions(const std::unordered_map<std::string, std::string>& options, PassOptions* out,
                      std::string* error) {
  PassOptions parsed;
  for (const auto& kv : options) {
    const std::string& key = kv.first;
    const std::string& val = kv.second;
    bool ok = true;
    if (key == "relu_calib_ranges") {
      ok = ParseRanges(key, val, &parsed.relu_calib_ranges, error);
    } else if (key == "excluded_sym_names") {
      for (const auto& name : Split(val, ';')) parsed.excluded_sym_names.insert(name);
    } else if (key == "excluded_op_names") {
      for (const auto& name : Split(val, ';')) parsed.excluded_op_names.insert(name);
    } else if (key == "quantized_dtype") {
      ok = val == "int8" || val == "uint8" || val == "auto";
      if (!ok) *error = "option quantized_dtype: expected int8, uint8 or auto, got '" + val + "'";
      parsed.quantized_dtype = val;
    } else if (key == "fuse_relu") {
      ok = ParseFlag(key, val, &parsed.fuse_relu, error);
    } else if (key == "fuse_pooling") {
      ok = ParseFlag(key, val, &parsed.fuse_pooling, error);
    } else if (key == "quantize_fp32_bn") {
      ok = ParseFlag(key, val, &parsed.quantize_fp32_bn, error);
    } else {
      *error = "unknown option '" + key + "'";
      ok = false;
    }
    if (!ok) return false;
  }
  *out = parsed;
  return true;
}

}  // namespace bnq
