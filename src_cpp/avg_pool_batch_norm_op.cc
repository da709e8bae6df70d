// Registers _contrib_quantized_avg_pool_batch_norm: average pooling of
// int8/uint8 NCHW data followed by the plugin's quantized BatchNorm and an
// optional activation (the attributes of the _act ops; act_type absent for
// none), from the unrounded mean (avg_pool_batch_norm_kernel.h).  The graph
// pass makes it of an average pooling whose BatchNorm would read the mean
// rounded (MXNet's int8 pooling, or the plugin's) or left fp32 after a
// dequantize.  Inputs: data, gamma, beta, moving_mean, moving_var, min_data,
// max_data.  Outputs: output (uint8 when the activation cannot be negative,
// else int8), min_output, max_output.  Attributes: Pooling's (kernel, stride,
// pad, global_pool, pooling_convention, count_include_pad, layout NCHW,
// pool_type 'avg') and the BatchNorm's (axis 1), with MXNet's defaults; the
// calibrated range is the BatchNorm+act output's.
//
// _contrib_quantized_avg_pool_batch_norm_global_avg_pool: the same followed by
// global average pooling, as the _act_global_avg_pool op (relu, clip and
// leaky only): the pass makes it of a head (BatchNorm + act + mean) after an
// average pooling.  Output of shape (N, C, 1, 1) from the unrounded window
// means and BN+act values, in the calibrated range of the pooled output.
#include <string>
#include <vector>

#include "batch_norm_attrs.h"
#include "mxnet/lib_api.h"
#include "op_names.h"
#include "op_support.h"

using namespace mxnet::ext;  // NOLINT

namespace bnq {
namespace {

// Everything that differs between the two ops.
struct OpTraits {
  const char* name;
  bool global_avg_pool;
};
constexpr OpTraits kAvgPoolBatchNorm{kQuantizedAvgPoolBatchNormOp, false};
constexpr OpTraits kAvgPoolBatchNormPool{kQuantizedAvgPoolBatchNormPoolOp, true};

constexpr int kNumInputs = 7;
enum Input { kData, kGamma, kBeta, kMovingMean, kMovingVar, kMinData, kMaxData };
const char* const kInputNames[kNumInputs] = {"data",       "gamma",    "beta",    "moving_mean",
                                             "moving_var", "min_data", "max_data"};

// The op's attributes, its activation included.
bool ParseOpAttrs(const OpTraits& traits, const std::unordered_map<std::string, std::string>& attrs,
                  AvgPoolBatchNormAttrs* parsed, std::string* error) {
  if (!ParseAvgPoolBatchNormAttrs(attrs, parsed, error)) return false;
  return !traits.global_avg_pool || CheckActivationBeforeMean(parsed->bn.act, attrs, error);
}

template <const OpTraits& T>
MXReturnValue ParseAttrs(const std::unordered_map<std::string, std::string>& attrs, int* num_in,
                         int* num_out) {
  constexpr const char* kOp = T.name;
  return Guarded(kOp, [&] {
    AvgPoolBatchNormAttrs parsed;
    std::string error;
    if (!ParseOpAttrs(T, attrs, &parsed, &error)) return Fail(kOp, error);
    *num_in = kNumInputs;
    *num_out = 3;
    return MX_SUCCESS;
  });
}

template <const OpTraits& T>
MXReturnValue InferType(const std::unordered_map<std::string, std::string>& attrs,
                        std::vector<int>* in_types, std::vector<int>* out_types) {
  constexpr const char* kOp = T.name;
  return Guarded(kOp, [&] {
    AvgPoolBatchNormAttrs parsed;
    std::string error;
    if (!ParseOpAttrs(T, attrs, &parsed, &error)) return Fail(kOp, error);
    QuantType unused;
    const int t = in_types->at(kData);
    if (t >= 0 && !ToQuantType(t, &unused)) {
      return Fail(kOp, std::string("data must be int8 or uint8, got ") + DTypeName(t));
    }
    for (int i = kGamma; i < kNumInputs; ++i) {
      int& p = in_types->at(i);
      if (p >= 0 && p != kFloat32) {
        return Fail(kOp, std::string(kInputNames[i]) + " must be float32, got " + DTypeName(p));
      }
      p = kFloat32;
    }
    out_types->at(0) = FusedOutputType(parsed.bn.act) == QuantType::kInt8 ? kInt8 : kUint8;
    out_types->at(1) = out_types->at(2) = kFloat32;
    return MX_SUCCESS;
  });
}

template <const OpTraits& T>
MXReturnValue InferSType(const std::unordered_map<std::string, std::string>& /*attrs*/,
                         std::vector<int>* in_stypes, std::vector<int>* out_stypes) {
  return DenseStorageOnly(T.name, in_stypes, out_stypes);
}

template <const OpTraits& T>
MXReturnValue InferShape(const std::unordered_map<std::string, std::string>& attrs,
                         std::vector<std::vector<unsigned int>>* in_shapes,
                         std::vector<std::vector<unsigned int>>* out_shapes) {
  constexpr const char* kOp = T.name;
  return Guarded(kOp, [&] {
    AvgPoolBatchNormAttrs parsed;
    std::string error;
    if (!ParseOpAttrs(T, attrs, &parsed, &error)) return Fail(kOp, error);
    const std::vector<unsigned int> data = in_shapes->at(kData);
    if (!IsKnown(data)) return Fail(kOp, UnknownShapeError("data", data));
    AvgPoolingShape shape;
    const dnnl::memory::dims dims(data.begin(), data.end());
    if (!MakeAvgPoolingShape(parsed.pool, dims, dnnl::memory::data_type::s8, &shape, &error)) {
      return Fail(kOp, error + ", got data of shape " + DimsString(data));
    }
    const std::vector<unsigned int> channels{data[1]}, scalar{1};
    for (int i = kGamma; i < kNumInputs; ++i) {
      const auto& expected = i < kMinData ? channels : scalar;
      if (!Compatible(in_shapes->at(i), expected)) {
        return Fail(kOp, std::string(kInputNames[i]) + " has shape " +
                             DimsString(in_shapes->at(i)) + ", expected " + DimsString(expected) +
                             " for data of shape " + DimsString(data));
      }
      in_shapes->at(i) = expected;
    }
    out_shapes->at(0).assign(shape.dst.begin(), shape.dst.end());
    if (T.global_avg_pool) out_shapes->at(0)[2] = out_shapes->at(0)[3] = 1;
    out_shapes->at(1) = out_shapes->at(2) = scalar;
    return MX_SUCCESS;
  });
}

// moving_mean and moving_var are auxiliary states, as in MXNet's BatchNorm.
template <const OpTraits& T>
MXReturnValue MutateInputs(const std::unordered_map<std::string, std::string>& /*attrs*/,
                           std::vector<int>* input_indices) {
  input_indices->push_back(kMovingMean);
  input_indices->push_back(kMovingVar);
  return MX_SUCCESS;
}

template <const OpTraits& T>
MXReturnValue Forward(const std::unordered_map<std::string, std::string>& attrs,
                      std::vector<MXTensor>* inputs, std::vector<MXTensor>* outputs,
                      const OpResource& /*res*/) {
  constexpr const char* kOp = T.name;
  return Guarded(kOp, [&] {
    AvgPoolBatchNormAttrs parsed;
    std::string error;
    if (!ParseOpAttrs(T, attrs, &parsed, &error)) return Fail(kOp, error);
    const std::vector<MXTensor>& in = *inputs;
    QuantType in_type;
    if (in.size() != kNumInputs || outputs->size() != 3 ||
        !ToQuantType(in[kData].dtype, &in_type)) {
      return Fail(kOp, "expects int8 or uint8 data and the 6 float32 inputs after it");
    }
    const MXTensor& data = in[kData];
    if (data.shape.size() != 4) {
      return Fail(kOp, "expects 4-D NCHW data, got shape " + ShapeString(data.shape));
    }
    for (int i = kGamma; i < kNumInputs; ++i) {
      const int64_t expected = i < kMinData ? data.shape[1] : 1;
      if (in[i].dtype != kFloat32 || in[i].shape.size() != 1 || in[i].shape[0] != expected) {
        return Fail(kOp, std::string(kInputNames[i]) + " must be float32 of shape (" +
                             std::to_string(expected) + ",), got " + DTypeName(in[i].dtype) +
                             " of shape " + ShapeString(in[i].shape));
      }
    }
    AvgPoolingShape pool;
    if (!MakeAvgPoolingShape(parsed.pool, data.shape, ToDnnl(in_type), &pool, &error)) {
      return Fail(kOp, error + ", got data of shape " + ShapeString(data.shape));
    }
    const ChannelParams params{Floats(in[kGamma]), Floats(in[kBeta]), Floats(in[kMovingMean]),
                               Floats(in[kMovingVar]), data.shape[1]};
    const QuantType out_type = FusedOutputType(parsed.bn.act);
    FoldedScaleShift folded;
    // The mean of the levels lies within the input's range: the fold of the
    // BatchNorm on that range maps it, and a derived range holds it.
    if (!FoldScaleShift(parsed.bn, params, *Floats(in[kMinData]), *Floats(in[kMaxData]), in_type,
                        out_type, &folded, &error, T.global_avg_pool)) {
      return Fail(kOp, error);
    }
    if (T.global_avg_pool) {
      SharedAvgPoolMeanKernel().Run(pool, data.data_ptr, folded, out_type, (*outputs)[0].data_ptr);
    } else {
      SharedAvgPoolBatchNormKernel().Run(MakeAvgPoolBatchNormShape(pool, folded, out_type),
                                         data.data_ptr, folded, (*outputs)[0].data_ptr);
    }
    *(*outputs)[1].data<float>() = folded.min_output;
    *(*outputs)[2].data<float>() = folded.max_output;
    return MX_SUCCESS;
  });
}

}  // namespace
}  // namespace bnq

BNQ_REGISTER_OP_OF_TRAITS(_contrib_quantized_avg_pool_batch_norm, bnq::kAvgPoolBatchNorm);
BNQ_REGISTER_OP_OF_TRAITS(_contrib_quantized_avg_pool_batch_norm_global_avg_pool,
                          bnq::kAvgPoolBatchNormPool);
