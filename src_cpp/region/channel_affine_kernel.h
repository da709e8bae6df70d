// The per-channel affine map of the plugin's BatchNorm ops on channels-last
// int8/uint8 data, hand-vectorized for AVX-512:
//
//     dst[p, c] = saturate(round_half_to_even(fl(fl(src[p, c] * scale[c]) + shift[c])))
//
// with p over pixels and c over contiguous channels.  The float operations are
// oneDNN's binary multiply with a binary-add post-op (what the op computes
// outside regions) in the same order and without fused multiply-adds, so both
// give the same bits.  oneDNN's binary primitive reaches about a third of
// memory-copy speed on these layouts; this kernel about half.
//
// Pure: depends on neither MXNet nor oneDNN.  Callers check
// ChannelAffineKernelAvailable() and use oneDNN's binary primitive where it is
// false.
#pragma once

#include <cstdint>

namespace bnq {
namespace region {

enum class ByteType { kInt8, kUint8 };

// The CPU has AVX-512 F, BW and VL.
bool ChannelAffineKernelAvailable();

// Pixels [begin, end) of a (pixels, channels) row-major tensor.  Requires
// ChannelAffineKernelAvailable().
void ChannelAffineRows(const void* src, ByteType src_type, const float* scale, const float* shift,
                       void* dst, ByteType dst_type, int64_t channels, int64_t begin, int64_t end);

}  // namespace region
}  // namespace bnq
