// What the registrations of the plugin's BatchNorm ops share
// (quantized_batch_norm_ops.cc, concat_batch_norm_op.cc): error reporting,
// type and shape helpers, and the one primitive cache of the process.
#pragma once

#include <algorithm>
#include <sstream>
#include <string>
#include <vector>

#include "avg_pool_batch_norm_kernel.h"
#include "error_reporting.h"
#include "mxnet/lib_api.h"
#include "scale_shift_folding.h"
#include "scale_shift_kernel.h"

namespace bnq {

inline mxnet::ext::MXReturnValue Fail(const std::string& op, const std::string& message) {
  ReportError(op, message);
  return mxnet::ext::MX_FAIL;
}

template <typename Shape>
std::string ShapeString(const Shape& shape) {
  std::ostringstream os;
  os << "(";
  for (size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
  os << (shape.size() == 1 ? ",)" : ")");
  return os.str();
}

// int8/uint8 as the quantized type; false for any other MXNet dtype.
bool ToQuantType(int dtype, QuantType* type);

// MXNet's name of a dtype, for messages.
const char* DTypeName(int dtype);

inline const float* Floats(const mxnet::ext::MXTensor& t) {
  return static_cast<const float*>(t.data_ptr);
}

// Runs `body`, turning any exception into an MXNet error: nothing may cross
// lib_api's C interface into MXNet.
template <typename Body>
mxnet::ext::MXReturnValue Guarded(const char* op, Body body) {
  try {
    return body();
  } catch (const dnnl::error& e) {
    return Fail(op, std::string("oneDNN error: ") + e.what());
  } catch (const std::exception& e) {
    return Fail(op, e.what());
  } catch (...) {
    return Fail(op, "unknown error");
  }
}

// Storage type inference of every plugin op: dense inputs and outputs only.
inline mxnet::ext::MXReturnValue DenseStorageOnly(const char* op, std::vector<int>* in_stypes,
                                                  std::vector<int>* out_stypes) {
  for (int& s : *in_stypes) {
    if (s >= 0 && s != mxnet::ext::kDefaultStorage)
      return Fail(op, "only dense inputs are supported");
    s = mxnet::ext::kDefaultStorage;
  }
  for (int& s : *out_stypes) s = mxnet::ext::kDefaultStorage;
  return mxnet::ext::MX_SUCCESS;
}

// MXNet hands partially known shapes with unknown dimensions as -1, which
// the library API turns into this value.
constexpr unsigned int kUnknownDim = static_cast<unsigned int>(-1);

inline bool IsKnown(const std::vector<unsigned int>& shape) {
  return !shape.empty() && std::find(shape.begin(), shape.end(), kUnknownDim) == shape.end();
}

// True if `shape` (possibly partially unknown) can be `expected`.
inline bool Compatible(const std::vector<unsigned int>& shape,
                       const std::vector<unsigned int>& expected) {
  if (shape.empty()) return true;
  if (shape.size() != expected.size()) return false;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] != kUnknownDim && shape[i] != expected[i]) return false;
  }
  return true;
}

template <typename Shape>
std::string DimsString(const Shape& shape) {
  std::vector<long long> dims(shape.begin(), shape.end());
  for (auto& d : dims) d = d == kUnknownDim ? -1 : d;
  return ShapeString(dims);
}

// The library API cannot report "not inferred yet" (an unknown dimension
// handed back would become a real size of 2^32 - 1): the message says what
// to give.
std::string UnknownShapeError(const std::string& input, const std::vector<unsigned int>& shape);

// One primitive cache for the process.  The ops cannot be stateful: MXNet's
// own _contrib_quantized_batch_norm registers an FComputeEx, which MXNet
// dispatches to before any stateful compute, so an override must register a
// plain forward function (that replaces the FComputeEx).
ScaleShiftKernel& SharedKernel();
// The same for the ops that average pool before their BatchNorm.
AvgPoolBatchNormKernel& SharedAvgPoolBatchNormKernel();
AvgPoolMeanKernel& SharedAvgPoolMeanKernel();

// For the registrations: REGISTER_OP needs the name as a token.
constexpr bool SameName(const char* a, const char* b) {
  return *a == *b && (*a == '\0' || SameName(a + 1, b + 1));
}

}  // namespace bnq

// Registers op_name with the entry points its file defines in namespace bnq
// as templates over the op's traits (ParseAttrs, InferType, InferSType,
// InferShape, MutateInputs, Forward), after checking that the token is the
// traits' name.  Used at file scope, after namespace bnq closes.
#define BNQ_REGISTER_OP_OF_TRAITS(op_name, traits)                                  \
  static_assert(bnq::SameName(#op_name, traits.name), #op_name " is not " #traits); \
  REGISTER_OP(op_name)                                                              \
      .setParseAttrs(bnq::ParseAttrs<traits>)                                       \
      .setInferType(bnq::InferType<traits>)                                         \
      .setInferSType(bnq::InferSType<traits>)                                       \
      .setInferShape(bnq::InferShape<traits>)                                       \
      .setMutateInputs(bnq::MutateInputs<traits>)                                   \
      .setForward(bnq::Forward<traits>, "cpu")
