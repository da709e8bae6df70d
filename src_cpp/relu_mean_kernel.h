// The kernel of BatchNorm + ReLU + global average pooling: the mean of each
// (n, c) over its `count` positions, taken from the unrounded BN+ReLU values,
//
//     dst[n, c] = saturate_u8(round_half_to_even(
//                     sum_i max(0, fl(fl(src[n, c, i] * scale[c]) + shift[c])) / count))
//
// where scale/shift map the quantized input to the output's levels (the
// pooled output's own range).  Rounding the BN+ReLU output first and the mean
// again, in the range of the unpooled values, would leave the classifier a
// small part of the 256 levels after two roundings.
//
// Each term is computed in float as the BatchNorm kernels do (multiply, then
// add, no FMA: the library builds with -ffp-contract=off) and the terms are
// summed in double in the order of i, so both layouts give the same bits:
// the op outside regions (planar NCHW) and the region step (channels last).
// No oneDNN: its pooling and reduction primitives know no per-channel affine
// map before the mean, and run reference kernels on some of these layouts.
#pragma once

#include <cstdint>

namespace bnq {

enum class MeanLayout {
  kPlanar,        // (batch, channels, count): NCHW and every layout with the channel axis 1
  kChannelsLast,  // (batch, count, channels): NHWC
};

struct ReluMeanShape {
  int64_t batch = 1;
  int64_t channels = 1;
  int64_t count = 1;  // positions pooled per (n, c), at least 1
  MeanLayout layout = MeanLayout::kPlanar;
};

// src: int8 (`int8_src`) or uint8 values of `shape`; scale, shift: `channels`
// floats; dst: batch x channels uint8.  Splits the work over OpenMP threads.
void ReluMeanOfAffine(const ReluMeanShape& shape, bool int8_src, const void* src,
                      const float* scale, const float* shift, uint8_t* dst);

}  // namespace bnq
