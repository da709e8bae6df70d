// libFuzzer harness for the library's input handling that needs neither
// MXNet nor oneDNN: attribute parsing, scale/shift folding and the graph
// pass's option parsing.  Built and run by `make fuzz` (clang, with ASan and
// UBSan); any crash, sanitizer report or broken invariant stops the run.
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

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const char* bytes = reinterpret_cast<const char*>(data);
  const size_t split = std::find(bytes, bytes + size, '\0') - bytes;
  const auto options = ParseLines(std::string(bytes, split));

  std::string error;
  bnq::PassOptions pass_options;
  if (!bnq::ParsePassOptions(options, &pass_options, &error)) Check(!error.empty());

  error.clear();
  bnq::BatchNormAttrs attrs;
  if (!bnq::ParseBatchNormAttrs(options, &attrs, &error)) {
    Check(!error.empty());
    return 0;
  }
  Check(std::isfinite(attrs.eps) && std::isfinite(attrs.momentum));
  Check(!attrs.has_calib_range || attrs.min_calib_range <= attrs.max_calib_range);

  // Channel parameters and ranges from the remaining bytes.
  std::vector<float> floats((size - std::min(size, split + 1)) / sizeof(float));
  if (!floats.empty()) std::memcpy(floats.data(), bytes + split + 1, floats.size() * sizeof(float));
  if (floats.size() < 6) return 0;
  const int64_t channels = (floats.size() - 2) / 4;
  const float* p = floats.data() + 2;
  const bnq::ChannelParams params{p, p + channels, p + 2 * channels, p + 3 * channels, channels};
  for (int relu = 0; relu < 2; ++relu) {
    for (auto in : {bnq::QuantType::kInt8, bnq::QuantType::kUint8}) {
      const auto out = relu ? bnq::QuantType::kUint8 : bnq::QuantType::kInt8;
      bnq::FoldedScaleShift folded;
      error.clear();
      if (!bnq::FoldScaleShift(attrs, params, floats[0], floats[1], in, out, relu, &folded,
                               &error)) {
        Check(!error.empty());
        continue;
      }
      Check(folded.scale.size() == static_cast<size_t>(channels));
      Check(std::isfinite(folded.min_output) && std::isfinite(folded.max_output));
      Check(folded.min_output <= folded.max_output);
      for (int64_t c = 0; c < channels; ++c) {
        Check(std::isfinite(folded.scale[c]) && std::isfinite(folded.shift[c]));
        // The kernel computes q * scale + shift in float32 for |q| <= 255.
        Check(std::isfinite(255.0f * std::fabs(folded.scale[c]) + std::fabs(folded.shift[c])));
      }
    }
    // float32 input: needs the calibrated range, gives finite factors.
    const auto out = relu ? bnq::QuantType::kUint8 : bnq::QuantType::kInt8;
    bnq::FoldedScaleShift folded;
    error.clear();
    if (!bnq::FoldScaleShiftFloatInput(attrs, params, out, relu, &folded, &error)) {
      Check(!error.empty());
      continue;
    }
    Check(attrs.has_calib_range && folded.scale.size() == static_cast<size_t>(channels));
    Check(folded.min_output <= folded.max_output && (!relu || folded.min_output == 0.f));
    for (int64_t c = 0; c < channels; ++c) {
      Check(std::isfinite(folded.scale[c]) && std::isfinite(folded.shift[c]));
    }
  }
  return 0;
}
