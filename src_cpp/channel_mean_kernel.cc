#include "channel_mean_kernel.h"

#include <cstring>

namespace bnq {
namespace {

using dt = dnnl::memory::data_type;
using tag = dnnl::memory::format_tag;

dnnl::memory::desc SrcDesc(int64_t rows, int64_t inner) {
  return {{rows, inner}, dt::u8, tag::ab};
}
dnnl::memory::desc OnesDesc(int64_t inner) { return {{inner, 1}, dt::s8, tag::ab}; }
dnnl::memory::desc DstDesc(int64_t rows) { return {{rows, 1}, dt::u8, tag::ab}; }
dnnl::memory::desc ScaleDesc() { return {{1}, dt::f32, tag::a}; }

}  // namespace

ChannelMeanKernel::ChannelMeanKernel() : engine_(dnnl::engine::kind::cpu, 0) {}

ChannelMeanKernel::Entry& ChannelMeanKernel::GetEntry(int64_t rows, int64_t inner) {
  for (auto it = cache_.begin(); it != cache_.end(); ++it) {
    if (it->rows == rows && it->inner == inner) {
      cache_.splice(cache_.begin(), cache_, it);
      return cache_.front();
    }
  }
  dnnl::primitive_attr attr;
  attr.set_scales_mask(DNNL_ARG_WEIGHTS, 0);  // one runtime scale: 1 / inner
  const dnnl::matmul::primitive_desc pd(engine_, SrcDesc(rows, inner), OnesDesc(inner),
                                        DstDesc(rows), attr);
  dnnl::memory ones(OnesDesc(inner), engine_);  // oneDNN allocates and owns it
  std::memset(ones.get_data_handle(), 1, static_cast<size_t>(inner));
  cache_.push_front(Entry{rows, inner, dnnl::matmul(pd), ones});
  if (cache_.size() > kCacheCapacity) cache_.pop_back();
  return cache_.front();
}

void ChannelMeanKernel::Run(int64_t rows, int64_t inner, const uint8_t* src, uint8_t* dst) {
  dnnl::matmul primitive;
  dnnl::memory ones;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    Entry& entry = GetEntry(rows, inner);
    primitive = entry.primitive;
    ones = entry.ones;  // shared handle: stays alive while this call uses it
  }
  float scale = 1.f / static_cast<float>(inner);
  // oneDNN takes non-const handles; src is only read.
  dnnl::memory src_mem(SrcDesc(rows, inner), engine_, const_cast<uint8_t*>(src));
  dnnl::memory dst_mem(DstDesc(rows), engine_, dst);
  dnnl::memory scale_mem(ScaleDesc(), engine_, &scale);
  dnnl::stream stream(engine_);
  primitive.execute(stream, {{DNNL_ARG_SRC, src_mem},
                             {DNNL_ARG_WEIGHTS, ones},
                             {DNNL_ARG_DST, dst_mem},
                             {DNNL_ARG_ATTR_SCALES | DNNL_ARG_WEIGHTS, scale_mem}});
  stream.wait();
}

}  // namespace bnq
