#include "region_steps.h"

#include <algorithm>
#include <cstring>

#include "../channel_mean_kernel.h"

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

void PrimitiveStep::Execute(dnnl::stream& stream, const std::vector<Value>& values) {
  for (Arg& a : args_) {
    if (a.value >= 0 && values[a.value].kind != ValueKind::kIntermediate) {
      a.memory.set_data_handle(values[a.value].data);
    }
  }
  primitive_.execute(stream, bound_);
}

ChannelMeanStep::ChannelMeanStep(std::string name, int src, int dst, int64_t batch,
                                 int64_t channels, int64_t count)
    : Step(std::move(name)), batch_(batch), channels_(channels), count_(count),
      sums_(static_cast<size_t>(channels)) {
  reads_.push_back(src);
  writes_.push_back(dst);
}

void ChannelMeanStep::Execute(dnnl::stream& stream, const std::vector<Value>& values) {
  stream.wait();  // the input comes from the primitive before
  const auto* src = static_cast<const uint8_t*>(values[reads_[0]].data);
  auto* dst = static_cast<uint8_t*>(values[writes_[0]].data);
  for (int64_t n = 0; n < batch_; ++n) {
    std::fill(sums_.begin(), sums_.end(), 0);
    const uint8_t* image = src + n * count_ * channels_;
    for (int64_t i = 0; i < count_; ++i) {
      const uint8_t* pixel = image + i * channels_;
      for (int64_t c = 0; c < channels_; ++c) sums_[c] += pixel[c];
    }
    for (int64_t c = 0; c < channels_; ++c) {
      dst[n * channels_ + c] = RoundedMean(sums_[c], static_cast<int32_t>(count_));
    }
  }
}

ScalarStep::ScalarStep(std::string name, int dst, float value)
    : Step(std::move(name)), value_(value) {
  writes_.push_back(dst);
}

void ScalarStep::Execute(dnnl::stream&, const std::vector<Value>& values) {
  std::memcpy(values[writes_[0]].data, &value_, sizeof(float));
}

}  // namespace region
}  // namespace bnq
