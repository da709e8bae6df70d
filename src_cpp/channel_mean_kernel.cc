#include "channel_mean_kernel.h"

#include <cstring>
#include <vector>

namespace bnq {
namespace {

using dt = dnnl::memory::data_type;
using tag = dnnl::memory::format_tag;

dnnl::memory::desc SrcDesc(int64_t rows, int64_t inner) { return {{rows, inner}, dt::u8, tag::ab}; }
dnnl::memory::desc OnesDesc(int64_t inner) { return {{inner, 1}, dt::s8, tag::ab}; }
dnnl::memory::desc SumsDesc(int64_t rows) { return {{rows, 1}, dt::s32, tag::ab}; }

}  // namespace

uint8_t RoundedMean(int32_t sum, int32_t count) {
  int32_t q = sum / count;
  const int32_t twice_rest = 2 * (sum % count);
  if (twice_rest > count || (twice_rest == count && (q & 1))) ++q;
  return static_cast<uint8_t>(q);
}

ChannelMeanKernel::ChannelMeanKernel() : engine_(dnnl::engine::kind::cpu, 0) {}

ChannelMeanKernel::Sums ChannelMeanKernel::MakeSums(int64_t rows, int64_t inner) const {
  const dnnl::matmul::primitive_desc pd(engine_, SrcDesc(rows, inner), OnesDesc(inner),
                                        SumsDesc(rows));
  dnnl::memory ones(OnesDesc(inner), engine_);  // oneDNN allocates and owns it
  std::memset(ones.get_data_handle(), 1, static_cast<size_t>(inner));
  return Sums{dnnl::matmul(pd), ones};
}

void ChannelMeanKernel::Run(int64_t rows, int64_t inner, const uint8_t* src, uint8_t* dst) {
  // A copy of shared handles: the ones stay alive while this call uses them.
  const Sums kernel = cache_.Get({rows, inner}, [&] { return MakeSums(rows, inner); });
  std::vector<int32_t> sums(static_cast<size_t>(rows));
  // oneDNN takes non-const handles; src is only read.
  dnnl::memory src_mem(SrcDesc(rows, inner), engine_, const_cast<uint8_t*>(src));
  dnnl::memory sums_mem(SumsDesc(rows), engine_, sums.data());
  dnnl::stream stream(engine_);
  kernel.primitive.execute(
      stream, {{DNNL_ARG_SRC, src_mem}, {DNNL_ARG_WEIGHTS, kernel.ones}, {DNNL_ARG_DST, sums_mem}});
  stream.wait();
  for (int64_t r = 0; r < rows; ++r) {
    dst[r] = RoundedMean(sums[r], static_cast<int32_t>(inner));
  }
}

}  // namespace bnq
