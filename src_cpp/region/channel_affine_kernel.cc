#include "channel_affine_kernel.h"

#include <immintrin.h>

#include <algorithm>
#include <cstring>

// GCC 12 warns about the deliberately undefined pass-through operands inside
// its own AVX-512 intrinsics (_mm512_undefined_*) when they are inlined.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace bnq {
namespace region {
namespace {

#define BNQ_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl")))

// 16 channels (fewer under `mask` in the tail; whole vectors load unmasked),
// widened to float.
template <ByteType kSrc, bool kMasked>
BNQ_AVX512 inline __m512 LoadBytes(const void* p, __mmask16 mask) {
  const __m128i bytes =
      kMasked ? _mm_maskz_loadu_epi8(mask, p) : _mm_loadu_si128(static_cast<const __m128i*>(p));
  return _mm512_cvtepi32_ps(kSrc == ByteType::kInt8 ? _mm512_cvtepi8_epi32(bytes)
                                                    : _mm512_cvtepu8_epi32(bytes));
}

// Rounds to nearest even (MXCSR's default mode, as oneDNN's conversions) and
// narrows with saturation: the same bytes as saturating in float first, with
// one clamp instead of two.  int8: values above 127 saturate in the
// narrowing; the cap keeps those of 2^31 and more from converting to INT_MIN
// (-128), and with the cap first NaN stays NaN (min returns its second
// operand), converts to INT_MIN and saturates to -128, as before.  uint8: the
// floor makes NaN and negatives 0; the unsigned narrowing saturates the rest,
// INT_MIN (2^31 and more) too.
template <ByteType kDst, bool kMasked>
BNQ_AVX512 inline void StoreBytes(void* p, __mmask16 mask, __m512 v) {
  __m128i bytes;
  if (kDst == ByteType::kInt8) {
    bytes = _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(_mm512_min_ps(_mm512_set1_ps(127.f), v)));
  } else {
    bytes = _mm512_cvtusepi32_epi8(_mm512_cvtps_epi32(_mm512_max_ps(v, _mm512_setzero_ps())));
  }
  if (kMasked) {
    _mm_mask_storeu_epi8(p, mask, bytes);
  } else {
    _mm_storeu_si128(static_cast<__m128i*>(p), bytes);
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
      const __m512 v =
          _mm512_mul_ps(LoadBytes<kSrc, false>(x + c, 0xffff), _mm512_loadu_ps(scale + c));
      StoreBytes<kDst, false>(
          y + c, 0xffff,
          Activate<kActivation>(_mm512_add_ps(v, _mm512_loadu_ps(shift + c)), slope, lo, hi));
    }
    if (tail) {
      const __m512 v = _mm512_mul_ps(LoadBytes<kSrc, true>(x + full, tail),
                                     _mm512_maskz_loadu_ps(tail, scale + full));
      StoreBytes<kDst, true>(
          y + full, tail,
          Activate<kActivation>(_mm512_add_ps(v, _mm512_maskz_loadu_ps(tail, shift + full)), slope,
                                lo, hi));
    }
  }
}

// The same on AVX2, 8 channels at a time; a channel tail goes through an
// 8-wide scratch row so that no load or store passes the row's end.
#define BNQ_AVX2 __attribute__((target("avx2")))

template <ByteType kSrc>
BNQ_AVX2 inline __m256 LoadBytes8(const uint8_t* p) {
  const __m128i bytes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
  return _mm256_cvtepi32_ps(kSrc == ByteType::kInt8 ? _mm256_cvtepi8_epi32(bytes)
                                                    : _mm256_cvtepu8_epi32(bytes));
}

template <ByteType kDst>
BNQ_AVX2 inline void StoreBytes8(uint8_t* p, __m256 v) {
  const bool s8 = kDst == ByteType::kInt8;
  v = _mm256_min_ps(_mm256_max_ps(v, _mm256_set1_ps(s8 ? -128.f : 0.f)),
                    _mm256_set1_ps(s8 ? 127.f : 255.f));
  // In range after the clamp, so the packs narrow without saturating.
  const __m256i words = _mm256_packs_epi32(_mm256_cvtps_epi32(v), _mm256_setzero_si256());
  const __m128i lo = _mm256_castsi256_si128(words), hi = _mm256_extracti128_si256(words, 1);
  const __m128i both = _mm_unpacklo_epi64(lo, hi);  // the 8 values as int16, in order
  const __m128i bytes = s8 ? _mm_packs_epi16(both, both) : _mm_packus_epi16(both, both);
  _mm_storel_epi64(reinterpret_cast<__m128i*>(p), bytes);
}

template <bool kActivation>
BNQ_AVX2 inline __m256 Activate8(__m256 v, __m256 slope, __m256 lo, __m256 hi) {
  if (!kActivation) return v;
  v = _mm256_blendv_ps(v, _mm256_mul_ps(v, slope),
                       _mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_LT_OQ));
  return _mm256_min_ps(_mm256_max_ps(v, lo), hi);
}

template <ByteType kSrc, ByteType kDst, bool kActivation>
BNQ_AVX2 inline void Block8(const uint8_t* x, const float* scale, const float* shift, __m256 slope,
                            __m256 lo, __m256 hi, uint8_t* y) {
  const __m256 v = _mm256_mul_ps(LoadBytes8<kSrc>(x), _mm256_loadu_ps(scale));
  StoreBytes8<kDst>(
      y, Activate8<kActivation>(_mm256_add_ps(v, _mm256_loadu_ps(shift)), slope, lo, hi));
}

template <ByteType kSrc, ByteType kDst, bool kActivation>
BNQ_AVX2 void Rows8(const void* src, const float* scale, const float* shift,
                    const LevelActivation& act, void* dst, int64_t channels, int64_t dst_pitch,
                    int64_t begin, int64_t end) {
  const __m256 slope = _mm256_set1_ps(act.negative_slope);
  const __m256 lo = _mm256_set1_ps(act.clamp_lo), hi = _mm256_set1_ps(act.clamp_hi);
  const auto* in = static_cast<const uint8_t*>(src);
  auto* out = static_cast<uint8_t*>(dst);
  const int64_t full = channels / 8 * 8, rest = channels - full;
  alignas(32) float tail_scale[8] = {}, tail_shift[8] = {};
  std::copy(scale + full, scale + channels, tail_scale);
  std::copy(shift + full, shift + channels, tail_shift);
  for (int64_t p = begin; p < end; ++p) {
    const uint8_t* x = in + p * channels;
    uint8_t* y = out + p * dst_pitch;
    for (int64_t c = 0; c < full; c += 8) {
      Block8<kSrc, kDst, kActivation>(x + c, scale + c, shift + c, slope, lo, hi, y + c);
    }
    if (rest) {
      uint8_t x_tail[8] = {}, y_tail[8];
      std::memcpy(x_tail, x + full, rest);
      Block8<kSrc, kDst, kActivation>(x_tail, tail_scale, tail_shift, slope, lo, hi, y_tail);
      std::memcpy(y + full, y_tail, rest);
    }
  }
}

template <bool kWide, ByteType kSrc, ByteType kDst, bool kActivation>
void RowsOn(const void* src, const float* scale, const float* shift, const LevelActivation& act,
            void* dst, int64_t channels, int64_t dst_pitch, int64_t begin, int64_t end) {
  if (kWide) {
    Rows<kSrc, kDst, kActivation>(src, scale, shift, act, dst, channels, dst_pitch, begin, end);
  } else {
    Rows8<kSrc, kDst, kActivation>(src, scale, shift, act, dst, channels, dst_pitch, begin, end);
  }
}

template <bool kWide, bool kActivation>
void RowsOfTypes(const void* src, ByteType src_type, const float* scale, const float* shift,
                 const LevelActivation& act, void* dst, ByteType dst_type, int64_t channels,
                 int64_t dst_pitch, int64_t begin, int64_t end) {
  using B = ByteType;
  if (src_type == B::kInt8 && dst_type == B::kInt8) {
    RowsOn<kWide, B::kInt8, B::kInt8, kActivation>(src, scale, shift, act, dst, channels, dst_pitch,
                                                   begin, end);
  } else if (src_type == B::kInt8) {
    RowsOn<kWide, B::kInt8, B::kUint8, kActivation>(src, scale, shift, act, dst, channels,
                                                    dst_pitch, begin, end);
  } else if (dst_type == B::kInt8) {
    RowsOn<kWide, B::kUint8, B::kInt8, kActivation>(src, scale, shift, act, dst, channels,
                                                    dst_pitch, begin, end);
  } else {
    RowsOn<kWide, B::kUint8, B::kUint8, kActivation>(src, scale, shift, act, dst, channels,
                                                     dst_pitch, begin, end);
  }
}

}  // namespace

AffineIsa ChannelAffineCpuIsa() {
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl")) {
    return AffineIsa::kAvx512;
  }
  return __builtin_cpu_supports("avx2") ? AffineIsa::kAvx2 : AffineIsa::kNone;
}

void ChannelAffineRows(AffineIsa isa, const void* src, ByteType src_type, const float* scale,
                       const float* shift, const LevelActivation& act, void* dst, ByteType dst_type,
                       int64_t channels, int64_t dst_pitch, int64_t begin, int64_t end) {
  const bool activation = act.negative_slope != 1.f ||
                          act.clamp_lo > -std::numeric_limits<float>::infinity() ||
                          act.clamp_hi < std::numeric_limits<float>::infinity();
  // ReLU and plain BatchNorm: the saturation is the whole activation.
  auto rows = isa == AffineIsa::kAvx512
                  ? (activation ? RowsOfTypes<true, true> : RowsOfTypes<true, false>)
                  : (activation ? RowsOfTypes<false, true> : RowsOfTypes<false, false>);
  rows(src, src_type, scale, shift, act, dst, dst_type, channels, dst_pitch, begin, end);
}

}  // namespace region
}  // namespace bnq
