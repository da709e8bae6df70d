#include "op_support.h"

namespace bnq {

using namespace mxnet::ext;  // NOLINT

bool ToQuantType(int dtype, QuantType* type) {
  if (dtype == kInt8) {
    *type = QuantType::kInt8;
    return true;
  }
  if (dtype == kUint8) {
    *type = QuantType::kUint8;
    return true;
  }
  return false;
}

const char* DTypeName(int dtype) {
  switch (dtype) {
    case kFloat32:
      return "float32";
    case kFloat64:
      return "float64";
    case kFloat16:
      return "float16";
    case kUint8:
      return "uint8";
    case kInt32:
      return "int32";
    case kInt8:
      return "int8";
    case kInt64:
      return "int64";
    default:
      return "unknown";
  }
}

std::string UnknownShapeError(const std::string& input, const std::vector<unsigned int>& shape) {
  return input + " must have at least one dimension, or its shape " + DimsString(shape) +
         " is not fully known (give input shapes, e.g. Symbol.optimize_for(..., "
         "shape_dict={'data': shape}) or skip_infer=True)";
}

ScaleShiftKernel& SharedKernel() {
  static ScaleShiftKernel* kernel = new ScaleShiftKernel();  // never destroyed: used until exit
  return *kernel;
}

AvgPoolBatchNormKernel& SharedAvgPoolBatchNormKernel() {
  static AvgPoolBatchNormKernel* kernel = new AvgPoolBatchNormKernel();  // used until exit
  return *kernel;
}

AvgPoolMeanKernel& SharedAvgPoolMeanKernel() {
  static AvgPoolMeanKernel* kernel = new AvgPoolMeanKernel();  // used until exit
  return *kernel;
}

}  // namespace bnq

// For tests: the shared BatchNorm kernel's primitive cache hits and misses.
extern "C" __attribute__((visibility("default"))) void bnq_batch_norm_cache_counts(
    uint64_t* hits, uint64_t* misses) {
  const auto counts = bnq::SharedKernel().CacheCounts();
  *hits = counts.first;
  *misses = counts.second;
}
