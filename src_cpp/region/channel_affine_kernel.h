// The per-channel affine map of the plugin's BatchNorm ops on channels-last
// int8/uint8 data, hand-vectorized for AVX-512:
//
//     v = fl(fl(src[p, c] * scale[c]) + shift[c])
//     dst[p, c] = saturate(round_half_to_even(clamp(v < 0 ? fl(v * slope) : v, lo, hi)))
//
// where slope, lo, hi are the fused activation in levels (1, -inf, +inf: none),
// with p over pixels and c over contiguous channels.  The float operations are
// oneDNN's binary multiply with a binary-add post-op and eltwise relu / clip
// post-ops (what the op computes outside regions) in the same order and
// without fused multiply-adds, so both give the same bits.  oneDNN's binary
// primitive reaches about a third of memory-copy speed on these layouts; this
// kernel about half.
//
// Pure: depends on neither MXNet nor oneDNN.  Callers check
// ChannelAffineKernelAvailable() and use oneDNN's binary primitive where it is
// false.
#pragma once

#include <cstdint>
#include <limits>

namespace bnq {
namespace region {

enum class ByteType { kInt8, kUint8 };

// The CPU has AVX-512 F, BW and VL.
bool ChannelAffineKernelAvailable();

// The fused activation in levels (FoldedScaleShift's).
struct LevelActivation {
  float negative_slope = 1.f;
  float clamp_lo = -std::numeric_limits<float>::infinity();
  float clamp_hi = std::numeric_limits<float>::infinity();
};

// Pixels [begin, end) of a (pixels, channels) row-major tensor into dst,
// whose rows are `dst_pitch` >= channels elements apart (a channel slice of a
// wider tensor, e.g. a concatenation's part; channels for a dense one).
// Requires ChannelAffineKernelAvailable().
void ChannelAffineRows(const void* src, ByteType src_type, const float* scale, const float* shift,
                       const LevelActivation& act, void* dst, ByteType dst_type, int64_t channels,
                       int64_t dst_pitch, int64_t begin, int64_t end);

}  // namespace region
}  // namespace bnq
