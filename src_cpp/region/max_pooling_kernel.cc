#include "max_pooling_kernel.h"

#include <immintrin.h>

#include <algorithm>

namespace bnq {
namespace region {
namespace {

// The window's input positions along one axis: [first, last).
struct Span {
  int64_t first, last;
};
inline Span Window(int64_t out, int64_t stride, int64_t pad, int64_t kernel, int64_t size) {
  const int64_t start = out * stride - pad;
  return {std::max<int64_t>(0, start), std::min(size, start + kernel)};
}

#define BNQ_AVX512 __attribute__((target("avx512f,avx512bw")))
#define BNQ_AVX2 __attribute__((target("avx2")))

// The elementwise maximum of 64 (AVX-512) or 32 (AVX2) bytes as signed or unsigned values.
template <ByteType kType>
BNQ_AVX512 inline __m512i Max64(__m512i a, __m512i b) {
  return kType == ByteType::kInt8 ? _mm512_max_epi8(a, b) : _mm512_max_epu8(a, b);
}
template <ByteType kType>
BNQ_AVX2 inline __m256i Max32(__m256i a, __m256i b) {
  return kType == ByteType::kInt8 ? _mm256_max_epi8(a, b) : _mm256_max_epu8(a, b);
}
template <ByteType kType>
inline uint8_t Max1(uint8_t a, uint8_t b) {
  if (kType == ByteType::kInt8) {
    return static_cast<int8_t>(a) > static_cast<int8_t>(b) ? a : b;
  }
  return a > b ? a : b;
}

// One output pixel: the channels of the window's pixels, first row of the
// window first, so the first pixel seeds the maximum (windows are non-empty).
template <ByteType kType>
BNQ_AVX512 void Pixel512(const uint8_t* image, const MaxPoolShape& s, Span h, Span w,
                         uint8_t* out) {
  const uint8_t* seed = image + (h.first * s.width + w.first) * s.channels;
  for (int64_t c = 0; c < s.channels; c += 64) {
    const int64_t left = s.channels - c;
    const __mmask64 mask = left >= 64 ? ~0ULL : (1ULL << left) - 1;
    __m512i m = _mm512_maskz_loadu_epi8(mask, seed + c);
    for (int64_t y = h.first; y < h.last; ++y) {
      const uint8_t* row = image + y * s.width * s.channels + c;
      for (int64_t x = w.first; x < w.last; ++x) {
        m = Max64<kType>(m, _mm512_maskz_loadu_epi8(mask, row + x * s.channels));
      }
    }
    _mm512_mask_storeu_epi8(out + c, mask, m);
  }
}

template <ByteType kType>
BNQ_AVX2 void Pixel256(const uint8_t* image, const MaxPoolShape& s, Span h, Span w, uint8_t* out) {
  const int64_t c_full = s.channels / 32 * 32;
  const uint8_t* seed = image + (h.first * s.width + w.first) * s.channels;
  for (int64_t c = 0; c < c_full; c += 32) {
    __m256i m = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(seed + c));
    for (int64_t y = h.first; y < h.last; ++y) {
      const uint8_t* row = image + y * s.width * s.channels + c;
      for (int64_t x = w.first; x < w.last; ++x) {
        m = Max32<kType>(
            m, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + x * s.channels)));
      }
    }
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + c), m);
  }
  for (int64_t c = c_full; c < s.channels; ++c) {  // the channel tail, one at a time
    uint8_t m = seed[c];
    for (int64_t y = h.first; y < h.last; ++y) {
      for (int64_t x = w.first; x < w.last; ++x) {
        m = Max1<kType>(m, image[(y * s.width + x) * s.channels + c]);
      }
    }
    out[c] = m;
  }
}

template <ByteType kType, bool kWide>
void Rows(const MaxPoolShape& s, const uint8_t* src, uint8_t* dst, int64_t begin, int64_t end) {
  for (int64_t row = begin; row < end; ++row) {
    const int64_t n = row / s.out_height, oh = row % s.out_height;
    const uint8_t* image = src + n * s.height * s.width * s.channels;
    const Span h = Window(oh, s.stride_h, s.pad_top, s.kernel_h, s.height);
    uint8_t* out = dst + row * s.out_width * s.channels;
    for (int64_t ow = 0; ow < s.out_width; ++ow) {
      const Span w = Window(ow, s.stride_w, s.pad_left, s.kernel_w, s.width);
      if (kWide) {
        Pixel512<kType>(image, s, h, w, out + ow * s.channels);
      } else {
        Pixel256<kType>(image, s, h, w, out + ow * s.channels);
      }
    }
  }
}

}  // namespace

bool MaxPoolWindowsNonEmpty(const MaxPoolShape& s) {
  // The last window along an axis starts furthest in; the first ends soonest.
  auto fits = [](int64_t outs, int64_t stride, int64_t pad, int64_t kernel, int64_t size) {
    const Span first = Window(0, stride, pad, kernel, size);
    const Span last = Window(outs - 1, stride, pad, kernel, size);
    return outs >= 1 && first.first < first.last && last.first < last.last;
  };
  return s.channels >= 1 && fits(s.out_height, s.stride_h, s.pad_top, s.kernel_h, s.height) &&
         fits(s.out_width, s.stride_w, s.pad_left, s.kernel_w, s.width);
}

void MaxPoolRows(AffineIsa isa, const MaxPoolShape& s, ByteType type, const void* src, void* dst,
                 int64_t begin, int64_t end) {
  const auto* in = static_cast<const uint8_t*>(src);
  auto* out = static_cast<uint8_t*>(dst);
  const bool wide = isa == AffineIsa::kAvx512;
  if (type == ByteType::kInt8) {
    (wide ? Rows<ByteType::kInt8, true> : Rows<ByteType::kInt8, false>)(s, in, out, begin, end);
  } else {
    (wide ? Rows<ByteType::kUint8, true> : Rows<ByteType::kUint8, false>)(s, in, out, begin, end);
  }
}

}  // namespace region
}  // namespace bnq
