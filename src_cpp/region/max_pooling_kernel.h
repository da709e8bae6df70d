// Max pooling of channels-last (NHWC) int8/uint8 data, hand-vectorized for
// AVX-512 and AVX2:
//
//     dst[n, oh, ow, c] = max over the window's positions inside the input of
//                         src[n, h, w, c],  h = oh * stride_h - pad_top + kh, ...
//
// The padding never takes part (oneDNN's pooling_max, which MXNet's quantized
// pooling runs); a maximum is exact, so the bits are oneDNN's.  oneDNN 3.2's
// int8 pooling primitive on these layouts runs at a third of this kernel's
// speed (resnet's 3x3/2 pooling at 8x64x112x112: 0.97 against 0.27 ms, a
// memory copy of the input 0.33 ms).
//
// Pure: depends on neither MXNet nor oneDNN.  Callers choose the instruction
// set (at most ChannelAffineCpuIsa(), the same sets as the affine kernel) and
// use oneDNN's primitive where there is none, or where a window can lie
// wholly in the padding (MaxPoolWindowsNonEmpty).
#pragma once

#include <cstdint>

#include "channel_affine_kernel.h"

namespace bnq {
namespace region {

struct MaxPoolShape {
  int64_t batch = 1, channels = 1;
  int64_t height = 1, width = 1;          // input
  int64_t out_height = 1, out_width = 1;  // output
  int64_t kernel_h = 1, kernel_w = 1;
  int64_t stride_h = 1, stride_w = 1;
  int64_t pad_top = 0, pad_left = 0;  // the bottom/right padding follows from the sizes
};

// Every window holds at least one input position.
bool MaxPoolWindowsNonEmpty(const MaxPoolShape& s);

// Output rows (n, oh) in [begin, end) of batch * out_height.
void MaxPoolRows(AffineIsa isa, const MaxPoolShape& s, ByteType type, const void* src, void* dst,
                 int64_t begin, int64_t end);

}  // namespace region
}  // namespace bnq
