#include "pooling_attrs.h"

#include "number_parsing.h"

namespace bnq {
namespace {

using Attrs = std::unordered_map<std::string, std::string>;

bool Flag(const Attrs& a, const char* key, bool fallback, bool* value, std::string* why) {
  auto it = a.find(key);
  *value = fallback;
  if (it == a.end() || Trim(it->second) == "None") return true;
  if (ParseBool(it->second, value)) return true;
  *why = std::string("cannot parse ") + key + "='" + it->second + "'";
  return false;
}

// Two spatial values: given, or `fallback` twice.
bool Pair(const Attrs& a, const char* key, int64_t fallback, std::vector<int64_t>* out,
          std::string* why) {
  auto it = a.find(key);
  if (it == a.end() || Trim(it->second) == "()" || Trim(it->second) == "[]") {
    out->assign(2, fallback);
    return true;
  }
  if (!ParseTuple(it->second, out) || out->size() != 2) {
    *why = std::string("cannot parse ") + key + "='" + it->second + "' for 2 spatial dimensions";
    return false;
  }
  return true;
}

}  // namespace

bool ParsePoolingAttrs(const Attrs& a, PoolingAttrs* pool, std::string* why) {
  if (!Flag(a, "global_pool", false, &pool->global, why)) return false;
  auto type = a.find("pool_type");
  const std::string t = type == a.end() ? "max" : Trim(type->second);
  if (t != "max" && t != "avg") {
    *why = "pool_type " + t + " is not supported (max or avg)";
    return false;
  }
  pool->max = t == "max";
  auto conv = a.find("pooling_convention");
  const std::string c = conv == a.end() ? "valid" : Trim(conv->second);
  if (c != "valid" && c != "full") {
    *why = "pooling_convention " + c + " is not supported (valid or full)";
    return false;
  }
  pool->full_convention = c == "full";
  auto layout = a.find("layout");
  if (layout != a.end() && Trim(layout->second) != "NCHW" && Trim(layout->second) != "None") {
    *why = "pooling layout " + layout->second + " is not supported (NCHW)";
    return false;
  }
  if (!Flag(a, "count_include_pad", true, &pool->count_include_pad, why)) return false;
  if (pool->global) {
    pool->kernel.assign(2, 0);  // set from the input shape
    pool->stride.assign(2, 1);
    pool->pad.assign(2, 0);
    return true;
  }
  auto k = a.find("kernel");
  if (k == a.end() || !ParseTuple(k->second, &pool->kernel) || pool->kernel.size() != 2) {
    *why = "only 2-D pooling with a kernel is supported";
    return false;
  }
  if (!Pair(a, "stride", 1, &pool->stride, why) || !Pair(a, "pad", 0, &pool->pad, why)) {
    return false;
  }
  for (int i = 0; i < 2; ++i) {
    if (pool->kernel[i] <= 0 || pool->stride[i] <= 0 || pool->pad[i] < 0 ||
        pool->pad[i] >= pool->kernel[i]) {
      *why = "invalid pooling kernel/stride/pad";
      return false;
    }
  }
  return true;
}

bool PooledSize(const PoolingAttrs& pool, int dim, int64_t in, int64_t* out, int64_t* pad_right) {
  const int64_t kernel = pool.global ? in : pool.kernel[dim];
  const int64_t stride = pool.global ? 1 : pool.stride[dim];
  const int64_t pad = pool.global ? 0 : pool.pad[dim];
  const int64_t span = in + 2 * pad - kernel;
  if (span < 0) return false;
  *out = (pool.full_convention ? (span + stride - 1) / stride : span / stride) + 1;
  *pad_right = (*out - 1) * stride + kernel - in - pad;
  return true;
}

}  // namespace bnq
