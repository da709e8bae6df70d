// The kernel of BatchNorm + activation + global average pooling: the mean of
// each (n, c) over its `count` positions, taken from the unrounded values,
//
//     dst[n, c] = saturate(round_half_to_even(
//                     sum_i act(fl(fl(src[n, c, i] * scale[c]) + shift[c])) / count))
//
// where scale/shift map the quantized input to the output's levels (the
// pooled output's own range) and act is the activation in levels of a fold
// with `mean_follows` (scale_shift_folding.h): v < 0 ? v * slope : v, then
// clamped to [clamp_lo, clamp_hi].  Rounding the BN+act output first and the
// mean again, in the range of the unpooled values, would leave the
// classifier a small part of the 256 levels after two roundings.
//
// Each term is computed in float as the BatchNorm kernels do (multiply, then
// add, no FMA: the library builds with -ffp-contract=off) and the terms are
// summed in double in the order of i, so both layouts give the same bits:
// the op outside regions (planar NCHW) and the region step (channels last).
// No oneDNN: its pooling and reduction primitives know no per-channel affine
// map before the mean, and run reference kernels on some of these layouts.
// The source is quantized levels, or real values (float32) for a fold of
// real-valued input (FoldScaleShiftFloatInput).
#pragma once

#include <cstdint>

#include "scale_shift_folding.h"

namespace bnq {

enum class MeanLayout {
  kPlanar,        // (batch, channels, count): NCHW and every layout with the channel axis 1
  kChannelsLast,  // (batch, count, channels): NHWC
};

struct MeanShape {
  int64_t batch = 1;
  int64_t channels = 1;
  int64_t count = 1;  // positions pooled per (n, c), at least 1
  MeanLayout layout = MeanLayout::kPlanar;
};

// What the mean reads: int8 or uint8 levels, or float32 values.
enum class MeanSource { kInt8, kUint8, kFloat32 };
MeanSource MeanSourceOf(QuantType type);

// How channels-last data is read: portable loops, or AVX-512 (F, BW and VL;
// the caller checks the CPU) 16 channels at a time, 3x faster on a network's
// head (resnet50's 8x7x7x2048 int8: 0.19 against 0.57 ms on 2 cores).  Both
// give the same bits; planar data always takes the portable loops.
enum class MeanIsa { kPortable, kAvx512 };

// src: `src_type` values of `shape`; `folded`: a fold with mean_follows for
// `channels`; dst: batch x channels of `dst_type`.  Splits the work over
// OpenMP threads.
void MeanOfActivation(const MeanShape& shape, MeanSource src_type, const void* src,
                      const FoldedScaleShift& folded, QuantType dst_type, void* dst,
                      MeanIsa isa = MeanIsa::kPortable);

}  // namespace bnq
