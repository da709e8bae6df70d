// The steps a compiled region runs, in order, and the values they pass.
//
// A value is one tensor of the region: a region input (its buffer is MXNet's,
// set at each forward), a region output (MXNet's buffer too), or an
// intermediate whose buffer the buffer plan assigns once.  Each value has the
// layout its producer chose (oneDNN picks it with format_tag::any), so no
// conversion happens between steps unless a consumer needs another layout,
// and then the compiler inserts a reorder step.
//
// A step is a oneDNN primitive with its arguments: values (by index, each
// argument with its own memory descriptor, so a step can view a buffer in
// another shape) and constants the step owns (quantized weights, bias,
// scales).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <oneapi/dnnl/dnnl.hpp>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "../activation_mean_kernel.h"
#include "../scale_shift_folding.h"
#include "channel_affine_kernel.h"
#include "max_pooling_kernel.h"

namespace bnq {
namespace region {

enum class ValueKind { kInput, kOutput, kIntermediate };

struct Value {
  ValueKind kind = ValueKind::kIntermediate;
  dnnl::memory::desc md;  // layout and type
  // For an intermediate that reuses another's bytes (a flatten of a 1x1
  // tensor): the value it aliases, else -1.
  int alias_of = -1;
  void* data = nullptr;  // planned (intermediate) or set per forward (input/output)
  size_t bytes() const { return md.get_size(); }
};

// One end (min or max) of a quantized tensor's real range: a constant known
// when the region is built (calibrated, or a region input), or a slot of the
// region's run-time ranges, which a step fills at each forward from the data
// (uncalibrated quantize and requantize) and later steps derive from.
struct RangeEnd {
  int slot = -1;      // >= 0: ranges[slot]
  float value = 0.f;  // the constant, when slot < 0
  bool at_run_time() const { return slot >= 0; }
  float Get(const std::vector<float>& ranges) const { return slot >= 0 ? ranges[slot] : value; }
};

using Ranges = std::vector<float>;

class Step {
 public:
  explicit Step(std::string name) : name_(std::move(name)) {}
  virtual ~Step() = default;

  const std::string& name() const { return name_; }
  const std::vector<int>& reads() const { return reads_; }
  const std::vector<int>& writes() const { return writes_; }

  // Creates the memory objects once the buffers are known.
  virtual void Bind(const dnnl::engine& engine, const std::vector<Value>& values) = 0;
  // Runs the step; buffers of inputs and outputs are refreshed from `values`.
  // `ranges`: the run-time ranges, filled in step order.
  virtual void Execute(dnnl::stream& stream, const std::vector<Value>& values, Ranges& ranges) = 0;

  // Constants that depend on run-time ranges (scales, an int32 bias) are
  // recomputed by this hook before each Execute; it may fill range slots too.
  void set_rescale(std::function<void(Ranges&)> rescale) { rescale_ = std::move(rescale); }
  void Rescale(Ranges& ranges) {
    if (rescale_) rescale_(ranges);
  }

 protected:
  std::string name_;
  std::vector<int> reads_, writes_;
  std::function<void(Ranges&)> rescale_;
};

// One oneDNN primitive.
class PrimitiveStep : public Step {
 public:
  PrimitiveStep(std::string name, dnnl::primitive primitive)
      : Step(std::move(name)), primitive_(std::move(primitive)) {}

  // `value` viewed as `md` for argument `arg`.
  void Read(int arg, int value, const dnnl::memory::desc& md);
  void Write(int arg, int value, const dnnl::memory::desc& md);
  // An argument the step owns (weights, bias, scales).
  void Constant(int arg, dnnl::memory memory);
  // The float32 elements of constant `arg`, for a rescale hook to rewrite.
  float* ConstantFloats(int arg);

  void Bind(const dnnl::engine& engine, const std::vector<Value>& values) override;
  void Execute(dnnl::stream& stream, const std::vector<Value>& values, Ranges& ranges) override;

 private:
  struct Arg {
    int arg;
    int value;  // -1 for a constant
    dnnl::memory::desc md;
    dnnl::memory memory;
  };
  dnnl::primitive primitive_;
  std::vector<Arg> args_;
  std::unordered_map<int, dnnl::memory> bound_;
};

// The plugin's BatchNorm+activation+global average pooling on int8/uint8
// data in a planar (NCHW) or channels-last layout: the mean of each (n, c)
// from the unrounded values (activation_mean_kernel.h), so that the op gives
// the same bits inside a region as outside.
class ActivationMeanStep : public Step {
 public:
  ActivationMeanStep(std::string name, int src, int dst, FoldedScaleShift folded,
                     dnnl::memory::data_type src_type, dnnl::memory::data_type dst_type,
                     const MeanShape& shape, MeanIsa isa);
  void Bind(const dnnl::engine&, const std::vector<Value>&) override {}
  void Execute(dnnl::stream& stream, const std::vector<Value>& values, Ranges& ranges) override;
  void SetScaleShift(FoldedScaleShift folded) { folded_ = std::move(folded); }

 private:
  FoldedScaleShift folded_;
  MeanSource src_type_;
  QuantType dst_type_;
  MeanShape shape_;
  MeanIsa isa_;
};

// The plugin's BatchNorm on channels-last int8/uint8 data: dst[p, c] =
// saturate(round(fl(src[p, c] * scale[c]) + shift[c])), with the hand-vectorized
// kernel (channel_affine_kernel.h), the pixels split over OpenMP threads as
// oneDNN splits its primitives' work.
class ChannelAffineStep : public Step {
 public:
  // dst's rows hold `dst_pitch` channels (0: as many as src), this step's
  // starting at `dst_offset` (a concatenation's part).
  ChannelAffineStep(std::string name, AffineIsa isa, int src, int dst,
                    const FoldedScaleShift& folded, dnnl::memory::data_type src_type,
                    dnnl::memory::data_type dst_type, int64_t pixels, int64_t dst_pitch = 0,
                    int64_t dst_offset = 0);
  void Bind(const dnnl::engine&, const std::vector<Value>&) override {}
  void Execute(dnnl::stream& stream, const std::vector<Value>& values, Ranges& ranges) override;
  void SetScaleShift(FoldedScaleShift folded);

 private:
  std::vector<float> scale_, shift_;
  LevelActivation act_;
  AffineIsa isa_;
  ByteType src_type_, dst_type_;
  int64_t pixels_, dst_pitch_, dst_offset_;
};

// MXNet's quantized max pooling on channels-last int8/uint8 data with the
// hand-vectorized kernel (max_pooling_kernel.h), the output rows split over
// OpenMP threads.
class MaxPoolStep : public Step {
 public:
  MaxPoolStep(std::string name, AffineIsa isa, int src, int dst, const MaxPoolShape& shape,
              dnnl::memory::data_type type);
  void Bind(const dnnl::engine&, const std::vector<Value>&) override {}
  void Execute(dnnl::stream& stream, const std::vector<Value>& values, Ranges& ranges) override;

 private:
  AffineIsa isa_;
  MaxPoolShape shape_;
  ByteType type_;
};

// dst = saturate(round(fl(scale_a * a) + fl(scale_b * b))) elementwise, on two
// tensors of one layout (int8, uint8 or int32 in and out), in this order of
// float operations: MXNet's quantized elemwise_add (oneDNN 2.4's reference
// sum) computes exactly that, and oneDNN 3.2's primitives may fuse the
// multiply and add.
//
// As a convolution's sum post-op (`post_op`): saturate(round(relu?(fma(b,
// scale_b, a)))), a fused multiply-add on the int32 convolution output `a`
// (scale_a 1), as oneDNN's kernels compute the sum, then the post-sum ReLU
// when `relu`.
class ScaledAddStep : public Step {
 public:
  ScaledAddStep(std::string name, int a, int b, int dst, float scale_a, float scale_b,
                dnnl::memory::data_type a_type, dnnl::memory::data_type b_type,
                dnnl::memory::data_type dst_type, int64_t elements);
  struct SumPostOp {
    bool relu;
  };
  ScaledAddStep(std::string name, int conv, int operand, int dst, float scale,
                dnnl::memory::data_type operand_type, int64_t elements, SumPostOp post_op);
  void Bind(const dnnl::engine&, const std::vector<Value>&) override {}
  void Execute(dnnl::stream& stream, const std::vector<Value>& values, Ranges& ranges) override;
  void SetScales(float scale_a, float scale_b);

 private:
  float scale_a_, scale_b_;
  dnnl::memory::data_type a_type_, b_type_, dst_type_;
  int64_t elements_;
  bool post_op_ = false, relu_ = false;
};

// Writes a range end into a one-element output (a region output's min or max).
class ScalarStep : public Step {
 public:
  ScalarStep(std::string name, int dst, RangeEnd value);
  void Bind(const dnnl::engine&, const std::vector<Value>&) override {}
  void Execute(dnnl::stream& stream, const std::vector<Value>& values, Ranges& ranges) override;

 private:
  RangeEnd value_;
};

// The smallest and largest element of a float32 or int32 tensor into two
// range slots (NaN skipped), as MXNet's uncalibrated quantize and requantize
// measure their input.  Padding of a blocked layout holds zeros, which the
// max(|min|, |max|) that both use ignores; regions keep these tensors plain
// or NHWC anyway.
class MinMaxStep : public Step {
 public:
  MinMaxStep(std::string name, int src, dnnl::memory::data_type type, int64_t elements,
             int min_slot);
  void Bind(const dnnl::engine&, const std::vector<Value>&) override {}
  void Execute(dnnl::stream& stream, const std::vector<Value>& values, Ranges& ranges) override;

 private:
  dnnl::memory::data_type type_;
  int64_t elements_;
  int min_slot_;
};

}  // namespace region
}  // namespace bnq
