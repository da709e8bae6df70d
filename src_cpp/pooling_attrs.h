// Attribute parsing for 2-D max/average pooling as MXNet's Pooling (and its
// quantized twin) writes it, with MXNet 1.9.1's defaults (PoolingParam):
// pool_type max, stride 1, pad 0, pooling_convention valid,
// count_include_pad true, layout NCHW.  Used by the region compiler (MXNet's
// quantized pooling) and the plugin's average pooling op.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

namespace bnq {

struct PoolingAttrs {
  std::vector<int64_t> kernel, stride, pad;
  bool max = true;  // else average
  bool global = false;
  bool full_convention = false;  // pooling_convention='full' (ceil)
  bool count_include_pad = true;
};

// Parses the pooling keys of `attrs` (others are the caller's to check);
// false with the reason in `why` for what 2-D max/avg pooling cannot be.
bool ParsePoolingAttrs(const std::unordered_map<std::string, std::string>& attrs,
                       PoolingAttrs* pool, std::string* why);

// The output size of one spatial dimension of `in` positions, and the
// padding on its far side that oneDNN needs for it; false if the kernel does
// not fit the padded input.  `dim` 0 or 1 (height, width); for global
// pooling the kernel is the input.
bool PooledSize(const PoolingAttrs& pool, int dim, int64_t in, int64_t* out, int64_t* pad_right);

}  // namespace bnq
