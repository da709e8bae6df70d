// The per-channel affine map of the plugin's BatchNorm ops on channels-last
// int8/uint8 data, hand-vectorized for AVX-512 and for AVX2:
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
// kernel about half (AVX-512), and the AVX2 version is 4x faster than the
// binary primitive on an AVX2-only CPU.
//
// Pure: depends on neither MXNet nor oneDNN.  Callers choose the instruction
// set (at most ChannelAffineCpuIsa()) and use oneDNN's binary primitive where
// there is none.
#pragma once

#include <cstdint>
#include <limits>

namespace bnq {
namespace region {

enum class ByteType { kInt8, kUint8 };

// The instruction sets the kernel is written for.
enum class AffineIsa { kNone, kAvx2, kAvx512 };

// The widest this CPU has (AVX-512: F, BW and VL).
AffineIsa ChannelAffineCpuIsa();

// The fused activation in levels (FoldedScaleShift's).
struct LevelActivation {
  float negative_slope = 1.f;
  float clamp_lo = -std::numeric_limits<float>::infinity();
  float clamp_hi = std::numeric_limits<float>::infinity();
};

// Pixels [begin, end) of a (pixels, channels) row-major tensor into dst,
// whose rows are `dst_pitch` >= channels elements apart (a channel slice of a
// wider tensor, e.g. a concatenation's part; channels for a dense one).
// `isa`: kAvx2 or kAvx512, at most ChannelAffineCpuIsa().
void ChannelAffineRows(AffineIsa isa, const void* src, ByteType src_type, const float* scale,
                       const float* shift, const LevelActivation& act, void* dst, ByteType dst_type,
                       int64_t channels, int64_t dst_pitch, int64_t begin, int64_t end);

}  // namespace region
}  // namespace bnq
