#include "channel_affine_kernel.h"

#include <immintrin.h>

// GCC 12 warns about the deliberately undefined pass-through operands inside
// its own AVX-512 intrinsics (_mm512_undefined_*) when they are inlined.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace bnq {
namespace region {
namespace {

#define BNQ_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl")))

// 16 channels (fewer under `mask`), widened to float.
template <ByteType kSrc>
BNQ_AVX512 inline __m512 LoadBytes(const void* p, __mmask16 mask) {
  const __m128i bytes = _mm_maskz_loadu_epi8(mask, p);
  return _mm512_cvtepi32_ps(kSrc == ByteType::kInt8 ? _mm512_cvtepi8_epi32(bytes)
                                                    : _mm512_cvtepu8_epi32(bytes));
}

// Saturates in float, then rounds to nearest even (MXCSR's default mode, as
// oneDNN's conversions) and narrows.
template <ByteType kDst>
BNQ_AVX512 inline void StoreBytes(void* p, __mmask16 mask, __m512 v) {
  if (kDst == ByteType::kInt8) {
    v = _mm512_min_ps(_mm512_max_ps(v, _mm512_set1_ps(-128.f)), _mm512_set1_ps(127.f));
    _mm_mask_storeu_epi8(p, mask, _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(v)));
  } else {
    v = _mm512_min_ps(_mm512_max_ps(v, _mm512_setzero_ps()), _mm512_set1_ps(255.f));
    _mm_mask_storeu_epi8(p, mask, _mm512_cvtusepi32_epi8(_mm512_cvtps_epi32(v)));
  }
}

// The activation in levels: a negative slope, then the clamp (oneDNN's eltwise
// relu with alpha, then clip, in that order); nothing without one.
template <bool kActivation>
BNQ_AVX512 inline __m512 Activate(__m512 v, __m512 slope, __m512 lo, __m512 hi) {
  if (!kActivation) return v;
  v = _mm512_mask_mul_ps(v, _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_LT_OQ), v, slope);
  return _mm512_min_ps(_mm512_max_ps(v, lo), hi);
}

template <ByteType kSrc, ByteType kDst, bool kActivation>
BNQ_AVX512 void Rows(const void* src, const float* scale, const float* shift,
                     const LevelActivation& act, void* dst, int64_t channels, int64_t dst_pitch,
                     int64_t begin, int64_t end) {
  const __m512 slope = _mm512_set1_ps(act.negative_slope);
  const __m512 lo = _mm512_set1_ps(act.clamp_lo), hi = _mm512_set1_ps(act.clamp_hi);
  const auto* in = static_cast<const uint8_t*>(src);
  auto* out = static_cast<uint8_t*>(dst);
  const int64_t full = channels / 16 * 16;
  const __mmask16 tail = static_cast<__mmask16>((1u << (channels - full)) - 1);
  for (int64_t p = begin; p < end; ++p) {
    const uint8_t* x = in + p * channels;
    uint8_t* y = out + p * dst_pitch;
    for (int64_t c = 0; c < full; c += 16) {
      // Separate multiply and add (no FMA), in oneDNN's order.
      const __m512 v = _mm512_mul_ps(LoadBytes<kSrc>(x + c, 0xffff), _mm512_loadu_ps(scale + c));
      StoreBytes<kDst>(
          y + c, 0xffff,
          Activate<kActivation>(_mm512_add_ps(v, _mm512_loadu_ps(shift + c)), slope, lo, hi));
    }
    if (tail) {
      const __m512 v =
          _mm512_mul_ps(LoadBytes<kSrc>(x + full, tail), _mm512_maskz_loadu_ps(tail, scale + full));
      StoreBytes<kDst>(
          y + full, tail,
          Activate<kActivation>(_mm512_add_ps(v, _mm512_maskz_loadu_ps(tail, shift + full)), slope,
                                lo, hi));
    }
  }
}

template <bool kActivation>
void RowsOfTypes(const void* src, ByteType src_type, const float* scale, const float* shift,
                 const LevelActivation& act, void* dst, ByteType dst_type, int64_t channels,
                 int64_t dst_pitch, int64_t begin, int64_t end) {
  using B = ByteType;
  if (src_type == B::kInt8 && dst_type == B::kInt8) {
    Rows<B::kInt8, B::kInt8, kActivation>(src, scale, shift, act, dst, channels, dst_pitch, begin,
                                          end);
  } else if (src_type == B::kInt8) {
    Rows<B::kInt8, B::kUint8, kActivation>(src, scale, shift, act, dst, channels, dst_pitch, begin,
                                           end);
  } else if (dst_type == B::kInt8) {
    Rows<B::kUint8, B::kInt8, kActivation>(src, scale, shift, act, dst, channels, dst_pitch, begin,
                                           end);
  } else {
    Rows<B::kUint8, B::kUint8, kActivation>(src, scale, shift, act, dst, channels, dst_pitch, begin,
                                            end);
  }
}

}  // namespace

bool ChannelAffineKernelAvailable() {
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl");
}

void ChannelAffineRows(const void* src, ByteType src_type, const float* scale, const float* shift,
                       const LevelActivation& act, void* dst, ByteType dst_type, int64_t channels,
                       int64_t dst_pitch, int64_t begin, int64_t end) {
  if (act.negative_slope != 1.f || act.clamp_lo > -std::numeric_limits<float>::infinity() ||
      act.clamp_hi < std::numeric_limits<float>::infinity()) {
    RowsOfTypes<true>(src, src_type, scale, shift, act, dst, dst_type, channels, dst_pitch, begin,
                      end);
  } else {  // ReLU and plain BatchNorm: the saturation is the whole activation
    RowsOfTypes<false>(src, src_type, scale, shift, act, dst, dst_type, channels, dst_pitch, begin,
                       end);
  }
}

}  // namespace region
}  // namespace bnq
