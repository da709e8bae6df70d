#include "region_steps.h"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <mutex>
#include <stdexcept>
#include <string>
#include <type_traits>

namespace bnq {
namespace region {

void PrimitiveStep::Read(int arg, int value, const dnnl::memory::desc& md) {
  args_.push_back({arg, value, md, {}});
  reads_.push_back(value);
}

void PrimitiveStep::Write(int arg, int value, const dnnl::memory::desc& md) {
  args_.push_back({arg, value, md, {}});
  writes_.push_back(value);
}

void PrimitiveStep::Constant(int arg, dnnl::memory memory) {
  args_.push_back({arg, -1, memory.get_desc(), memory});
}

void PrimitiveStep::Bind(const dnnl::engine& engine, const std::vector<Value>& values) {
  bound_.clear();
  for (Arg& a : args_) {
    if (a.value >= 0) {
      // Inputs and outputs get their buffer at each forward.
      a.memory = dnnl::memory(a.md, engine, values[a.value].data);
    }
    bound_[a.arg] = a.memory;
  }
}

void PrimitiveStep::Execute(dnnl::stream& stream, const std::vector<Value>& values, Ranges&) {
  for (Arg& a : args_) {
    if (a.value >= 0 && values[a.value].kind != ValueKind::kIntermediate) {
      a.memory.set_data_handle(values[a.value].data);
    }
  }
  primitive_.execute(stream, bound_);
}

float* PrimitiveStep::ConstantFloats(int arg) {
  for (Arg& a : args_) {
    if (a.arg == arg && a.value < 0) return static_cast<float*>(a.memory.get_data_handle());
  }
  throw std::runtime_error(name_ + ": no constant argument " + std::to_string(arg));
}

ActivationMeanStep::ActivationMeanStep(std::string name, int src, int dst, FoldedScaleShift folded,
                                       dnnl::memory::data_type src_type,
                                       dnnl::memory::data_type dst_type, const MeanShape& shape,
                                       MeanIsa isa)
    : Step(std::move(name)),
      folded_(std::move(folded)),
      src_type_(src_type == dnnl::memory::data_type::f32  ? MeanSource::kFloat32
                : src_type == dnnl::memory::data_type::s8 ? MeanSource::kInt8
                                                          : MeanSource::kUint8),
      dst_type_(dst_type == dnnl::memory::data_type::s8 ? QuantType::kInt8 : QuantType::kUint8),
      shape_(shape),
      isa_(isa) {
  using dt = dnnl::memory::data_type;
  if (src_type != dt::f32 && src_type != dt::s8 && src_type != dt::u8) {
    throw std::runtime_error(this->name() + ": the mean reads float32, int8 or uint8 data");
  }
  reads_.push_back(src);
  writes_.push_back(dst);
}

void ActivationMeanStep::Execute(dnnl::stream& stream, const std::vector<Value>& values, Ranges&) {
  stream.wait();  // the input comes from the primitive before
  MeanOfActivation(shape_, src_type_, values[reads_[0]].data, folded_, dst_type_,
                   values[writes_[0]].data, isa_);
}

namespace {

using dt = dnnl::memory::data_type;

ByteType ToByteType(dt type) { return type == dt::s8 ? ByteType::kInt8 : ByteType::kUint8; }

float Load(const void* p, dt type, int64_t i) {
  switch (type) {
    case dt::s8:
      return static_cast<const int8_t*>(p)[i];
    case dt::u8:
      return static_cast<const uint8_t*>(p)[i];
    default:
      return static_cast<float>(static_cast<const int32_t*>(p)[i]);
  }
}

// Round to nearest even (the default mode), saturate to the type, store.
void Store(void* p, dt type, int64_t i, float v) {
  const float r = std::nearbyint(v);
  switch (type) {
    case dt::s8:
      static_cast<int8_t*>(p)[i] = static_cast<int8_t>(std::min(127.f, std::max(-128.f, r)));
      break;
    case dt::u8:
      static_cast<uint8_t*>(p)[i] = static_cast<uint8_t>(std::min(255.f, std::max(0.f, r)));
      break;
    default: {
      // oneDNN's int32 saturation bound: the largest float below 2^31.
      const float c = std::min(2147483520.f, std::max(-2147483648.f, r));
      static_cast<int32_t*>(p)[i] = static_cast<int32_t>(c);
    }
  }
}

// Splits [0, n) over the OpenMP threads, as oneDNN splits its primitives' work.
template <typename Chunk>
void InParallel(int64_t n, Chunk chunk) {
#pragma omp parallel
  {
    const int64_t threads = omp_get_num_threads(), thread = omp_get_thread_num();
    const int64_t size = (n + threads - 1) / threads;
    const int64_t begin = std::min(n, thread * size);
    chunk(begin, std::min(n, begin + size));
  }
}

// A convolution's sum post-op on its int32 output: saturate(round(relu?(
// fma(operand, scale, conv)))), as oneDNN's kernels fuse the multiply and add.
// oneDNN's int32 saturation bound is the largest float below 2^31.
constexpr float kInt32High = 2147483520.f, kInt32Low = -2147483648.f;

template <typename Operand>
void AddIntoInt32Plain(const int32_t* conv, const Operand* operand, float scale, bool relu,
                       int32_t* dst, int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; ++i) {
    float v = std::fma(static_cast<float>(operand[i]), scale, static_cast<float>(conv[i]));
    if (relu) v = std::max(v, 0.f);
    dst[i] = static_cast<int32_t>(std::min(kInt32High, std::max(kInt32Low, std::nearbyint(v))));
  }
}

// Eight operands as floats.
__attribute__((target("avx2"))) inline __m256 LoadAsFloats(const int8_t* p) {
  return _mm256_cvtepi32_ps(
      _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}
__attribute__((target("avx2"))) inline __m256 LoadAsFloats(const uint8_t* p) {
  return _mm256_cvtepi32_ps(
      _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}
__attribute__((target("avx2"))) inline __m256 LoadAsFloats(const int32_t* p) {
  return _mm256_cvtepi32_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}

// The same, eight at a time (AVX2 + FMA: every AVX2 CPU has FMA).
template <typename Operand>
__attribute__((target("avx2,fma"))) void AddIntoInt32Avx2(const int32_t* conv,
                                                          const Operand* operand, float scale,
                                                          bool relu, int32_t* dst, int64_t begin,
                                                          int64_t end) {
  const __m256 s = _mm256_set1_ps(scale), zero = _mm256_setzero_ps();
  const __m256 high = _mm256_set1_ps(kInt32High), low = _mm256_set1_ps(kInt32Low);
  int64_t i = begin;
  for (; i + 8 <= end; i += 8) {
    __m256 v = _mm256_fmadd_ps(LoadAsFloats(operand + i), s, LoadAsFloats(conv + i));
    if (relu) v = _mm256_max_ps(v, zero);
    v = _mm256_round_ps(v, _MM_FROUND_CUR_DIRECTION | _MM_FROUND_NO_EXC);
    v = _mm256_min_ps(_mm256_max_ps(v, low), high);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), _mm256_cvttps_epi32(v));
  }
  AddIntoInt32Plain(conv, operand, scale, relu, dst, i, end);
}

template <typename Operand>
void AddIntoInt32(const int32_t* conv, const Operand* operand, float scale, bool relu, int32_t* dst,
                  int64_t n) {
  static const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  InParallel(n, [&](int64_t begin, int64_t end) {
    if (avx2) {
      AddIntoInt32Avx2(conv, operand, scale, relu, dst, begin, end);
    } else {
      AddIntoInt32Plain(conv, operand, scale, relu, dst, begin, end);
    }
  });
}

}  // namespace

ChannelAffineStep::ChannelAffineStep(std::string name, AffineIsa isa, int src, int dst,
                                     const FoldedScaleShift& folded, dt src_type, dt dst_type,
                                     int64_t pixels, int64_t dst_pitch, int64_t dst_offset)
    : Step(std::move(name)),
      isa_(isa),
      src_type_(ToByteType(src_type)),
      dst_type_(ToByteType(dst_type)),
      pixels_(pixels),
      dst_pitch_(dst_pitch),
      dst_offset_(dst_offset) {
  reads_.push_back(src);
  writes_.push_back(dst);
  SetScaleShift(folded);
}

void ChannelAffineStep::Execute(dnnl::stream& stream, const std::vector<Value>& values, Ranges&) {
  stream.wait();  // the input comes from the primitive before
  const void* src = values[reads_[0]].data;
  void* dst = static_cast<uint8_t*>(values[writes_[0]].data) + dst_offset_;  // bytes
  const int64_t channels = static_cast<int64_t>(scale_.size());
  const int64_t pitch = dst_pitch_ > 0 ? dst_pitch_ : channels;
#pragma omp parallel
  {
    const int64_t threads = omp_get_num_threads(), thread = omp_get_thread_num();
    const int64_t chunk = (pixels_ + threads - 1) / threads;
    const int64_t begin = std::min(pixels_, thread * chunk);
    const int64_t end = std::min(pixels_, begin + chunk);
    ChannelAffineRows(isa_, src, src_type_, scale_.data(), shift_.data(), act_, dst, dst_type_,
                      channels, pitch, begin, end);
  }
}

void ChannelAffineStep::SetScaleShift(FoldedScaleShift folded) {
  scale_ = std::move(folded.scale);
  shift_ = std::move(folded.shift);
  act_ = {folded.negative_slope, folded.clamp_lo, folded.clamp_hi};
}

MaxPoolStep::MaxPoolStep(std::string name, AffineIsa isa, int src, int dst,
                         const MaxPoolShape& shape, dt type)
    : Step(std::move(name)), isa_(isa), shape_(shape), type_(ToByteType(type)) {
  reads_.push_back(src);
  writes_.push_back(dst);
}

void MaxPoolStep::Execute(dnnl::stream& stream, const std::vector<Value>& values, Ranges&) {
  stream.wait();  // the input comes from the primitive before
  const void* src = values[reads_[0]].data;
  void* dst = values[writes_[0]].data;
  InParallel(shape_.batch * shape_.out_height, [&](int64_t begin, int64_t end) {
    MaxPoolRows(isa_, shape_, type_, src, dst, begin, end);
  });
}

ScaledAddStep::ScaledAddStep(std::string name, int a, int b, int dst, float scale_a, float scale_b,
                             dt a_type, dt b_type, dt dst_type, int64_t elements)
    : Step(std::move(name)),
      scale_a_(scale_a),
      scale_b_(scale_b),
      a_type_(a_type),
      b_type_(b_type),
      dst_type_(dst_type),
      elements_(elements) {
  reads_ = {a, b};
  writes_.push_back(dst);
}

ScaledAddStep::ScaledAddStep(std::string name, int conv, int operand, int dst, float scale,
                             dt operand_type, int64_t elements, SumPostOp post_op)
    : ScaledAddStep(std::move(name), conv, operand, dst, 1.f, scale, dt::s32, operand_type, dt::s32,
                    elements) {
  post_op_ = true;
  relu_ = post_op.relu;
}

void ScaledAddStep::Execute(dnnl::stream& stream, const std::vector<Value>& values, Ranges&) {
  stream.wait();
  const void* a = values[reads_[0]].data;
  const void* b = values[reads_[1]].data;
  void* dst = values[writes_[0]].data;
  if (post_op_) {
    const auto* conv = static_cast<const int32_t*>(a);
    auto* out = static_cast<int32_t*>(dst);
    switch (b_type_) {
      case dt::s8:
        AddIntoInt32(conv, static_cast<const int8_t*>(b), scale_b_, relu_, out, elements_);
        break;
      case dt::u8:
        AddIntoInt32(conv, static_cast<const uint8_t*>(b), scale_b_, relu_, out, elements_);
        break;
      default:
        AddIntoInt32(conv, static_cast<const int32_t*>(b), scale_b_, relu_, out, elements_);
    }
    return;
  }
#pragma omp parallel for
  for (int64_t i = 0; i < elements_; ++i) {
    const float scaled_a = scale_a_ * Load(a, a_type_, i);
    const float scaled_b = scale_b_ * Load(b, b_type_, i);
    Store(dst, dst_type_, i, scaled_b + scaled_a);
  }
}

void ScaledAddStep::SetScales(float scale_a, float scale_b) {
  scale_a_ = scale_a;
  scale_b_ = scale_b;
}

ScalarStep::ScalarStep(std::string name, int dst, RangeEnd value)
    : Step(std::move(name)), value_(value) {
  writes_.push_back(dst);
}

void ScalarStep::Execute(dnnl::stream&, const std::vector<Value>& values, Ranges& ranges) {
  const float v = value_.Get(ranges);
  std::memcpy(values[writes_[0]].data, &v, sizeof(float));
}

MinMaxStep::MinMaxStep(std::string name, int src, dt type, int64_t elements, int min_slot)
    : Step(std::move(name)), type_(type), elements_(elements), min_slot_(min_slot) {
  reads_.push_back(src);
}

namespace {

// MXNet's loop: starts at the type's extremes, so NaN never wins a
// comparison (v > hi and v < lo are false for it).
template <typename T>
void ChunkMinMax(const T* p, int64_t begin, int64_t end, T* lo, T* hi) {
  T l = *lo, h = *hi;
  for (int64_t i = begin; i < end; ++i) {
    h = p[i] > h ? p[i] : h;
    l = p[i] < l ? p[i] : l;
  }
  *lo = l;
  *hi = h;
}

// The int32 case (every requantize) vectorized; integers have no NaN.
__attribute__((target("avx2"))) void ChunkMinMaxAvx2(const int32_t* p, int64_t begin, int64_t end,
                                                     int32_t* lo, int32_t* hi) {
  int32_t l = *lo, h = *hi;
#pragma omp simd reduction(min : l) reduction(max : h)
  for (int64_t i = begin; i < end; ++i) {
    h = std::max(h, p[i]);
    l = std::min(l, p[i]);
  }
  *lo = l;
  *hi = h;
}

template <typename T>
void MinMax(const T* p, int64_t n, float* min, float* max) {
  static const bool avx2 = __builtin_cpu_supports("avx2");
  T lo = std::numeric_limits<T>::max(), hi = std::numeric_limits<T>::lowest();
  std::mutex mutex;
  InParallel(n, [&](int64_t begin, int64_t end) {
    T l = std::numeric_limits<T>::max(), h = std::numeric_limits<T>::lowest();
    if constexpr (std::is_same<T, int32_t>::value) {
      if (avx2) {
        ChunkMinMaxAvx2(p, begin, end, &l, &h);
      } else {
        ChunkMinMax(p, begin, end, &l, &h);
      }
    } else {
      ChunkMinMax(p, begin, end, &l, &h);
    }
    std::lock_guard<std::mutex> lock(mutex);
    if (h > hi) hi = h;
    if (l < lo) lo = l;
  });
  *min = static_cast<float>(lo);
  *max = static_cast<float>(hi);
}

}  // namespace

void MinMaxStep::Execute(dnnl::stream& stream, const std::vector<Value>& values, Ranges& ranges) {
  stream.wait();  // the input may come from the primitive before
  const void* src = values[reads_[0]].data;
  float* out = &ranges[min_slot_];
  if (type_ == dt::f32) {
    MinMax(static_cast<const float*>(src), elements_, out, out + 1);
  } else {
    MinMax(static_cast<const int32_t*>(src), elements_, out, out + 1);
  }
}

}  // namespace region
}  // namespace bnq
