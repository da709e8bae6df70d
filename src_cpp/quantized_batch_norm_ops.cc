// Registers the quantized BatchNorm ops with MXNet's library API:
//
//   _contrib_quantized_batch_norm       int8/uint8 in, int8 out.  Overrides
//                                       MXNet's own op of that name, with the
//                                       same inputs, outputs and attributes.
//   _contrib_quantized_batch_norm_relu  the same followed by ReLU, uint8 out.
//   _contrib_quantized_batch_norm_relu_global_avg_pool
//                                       the same followed by the mean over
//                                       every dimension after the channel
//                                       axis (global average pooling of
//                                       NCHW data), uint8 out of shape
//                                       (N, C, 1, 1), taken from the
//                                       unrounded BN+ReLU values; the
//                                       calibrated range is the pooled
//                                       output's (the classifier's input).
//                                       MXNet's int8 pooling rounds twice,
//                                       and falls back to a slow reference
//                                       kernel on a library op's output.
//   _contrib_batch_norm_quantize        BatchNorm on real-valued data, int8 out
//   _contrib_batch_norm_relu_quantize   the same followed by ReLU, uint8 out.
//   _contrib_quantized_batch_norm_act   quantized BatchNorm followed by the
//   _contrib_batch_norm_act_quantize    activation of its attributes act_type
//                                       ('relu', 'clip' with a_min and a_max,
//                                       'leaky' with slope, 'sigmoid', 'tanh',
//                                       'softrelu', 'gelu'), uint8 out when
//                                       the activation cannot be negative
//                                       (e.g. ReLU6), int8 otherwise.
//                                       Data: float32, or uint8/int8 holding
//                                       the values themselves (raw pixels, as
//                                       --data-layer-type uint8 feeds them).
//                                       Both need the calibrated output range
//                                       (e.g. a BatchNorm on the network
//                                       input, followed by a quantize).
//   _contrib_quantized_batch_norm_act_global_avg_pool
//                                       the _act op followed by the mean,
//                                       as the _relu_global_avg_pool op
//                                       (relu, clip and leaky only).
//   _contrib_batch_norm_act_global_avg_pool_quantize
//                                       the same on real-valued data, as the
//                                       _act_quantize op: the mean of the
//                                       exact BN+act values (a head after an
//                                       fp32 pooling or concat).
//
// Inputs: data, gamma, beta, moving_mean, moving_var, and for the quantized
// data of the _contrib_quantized_* ops min_data, max_data.
// Outputs: output, min_output, max_output.
#include <algorithm>
#include <cmath>
#include <sstream>
#include <string>
#include <vector>

#include "activation_mean_kernel.h"
#include "batch_norm_attrs.h"
#include "mxnet/lib_api.h"
#include "op_names.h"
#include "op_support.h"

using namespace mxnet::ext;  // NOLINT

namespace bnq {
namespace {

constexpr int kNumQuantizedInputs = 7;  // float32 data has no min_data, max_data
constexpr int kNumOutputs = 3;
enum Input { kData, kGamma, kBeta, kMovingMean, kMovingVar, kMinData, kMaxData };
const char* const kInputNames[kNumQuantizedInputs] = {
    "data", "gamma", "beta", "moving_mean", "moving_var", "min_data", "max_data"};

// Everything that differs between the ops.
enum class ActFrom { kNone, kRelu, kAttributes };
struct OpTraits {
  const char* name;
  ActFrom act;
  bool global_avg_pool;
  bool float_input;
};
constexpr OpTraits kBatchNorm{kQuantizedBatchNormOp, ActFrom::kNone, false, false};
constexpr OpTraits kBatchNormRelu{kQuantizedBatchNormReluOp, ActFrom::kRelu, false, false};
constexpr OpTraits kBatchNormReluPool{kQuantizedBatchNormReluPoolOp, ActFrom::kRelu, true, false};
constexpr OpTraits kFloatBatchNorm{kBatchNormQuantizeOp, ActFrom::kNone, false, true};
constexpr OpTraits kFloatBatchNormRelu{kBatchNormReluQuantizeOp, ActFrom::kRelu, false, true};
constexpr OpTraits kBatchNormAct{kQuantizedBatchNormActOp, ActFrom::kAttributes, false, false};
constexpr OpTraits kFloatBatchNormAct{kBatchNormActQuantizeOp, ActFrom::kAttributes, false, true};
constexpr OpTraits kBatchNormActPool{kQuantizedBatchNormActPoolOp, ActFrom::kAttributes, true,
                                     false};
constexpr OpTraits kFloatBatchNormActPool{kBatchNormActPoolQuantizeOp, ActFrom::kAttributes, true,
                                          true};

// The op's attributes, its activation included.
bool ParseOpAttrs(const OpTraits& traits, const std::unordered_map<std::string, std::string>& attrs,
                  BatchNormAttrs* parsed, std::string* error) {
  if (!ParseBatchNormAttrs(attrs, parsed, error, traits.act == ActFrom::kAttributes)) return false;
  if (traits.act == ActFrom::kRelu) parsed->act.kind = FusedActivation::Kind::kRelu;
  return !traits.global_avg_pool || CheckActivationBeforeMean(parsed->act, attrs, error);
}

int NumInputs(const OpTraits& traits) {
  return traits.float_input ? kMinData : kNumQuantizedInputs;
}

// The data types the op accepts, for messages.
const char* DataTypes(const OpTraits& traits) {
  return traits.float_input ? "float32, uint8 or int8" : "int8 or uint8";
}

bool AcceptsData(const OpTraits& traits, int dtype) {
  QuantType unused;
  return ToQuantType(dtype, &unused) || (traits.float_input && dtype == kFloat32);
}

template <const OpTraits& T>
MXReturnValue ParseAttrsImpl(const std::unordered_map<std::string, std::string>& attrs, int* num_in,
                             int* num_out) {
  BatchNormAttrs parsed;
  std::string error;
  if (!ParseOpAttrs(T, attrs, &parsed, &error)) return Fail(T.name, error);
  if (T.float_input && !parsed.has_calib_range) {
    return Fail(T.name,
                "float32 input needs the calibrated output range: set "
                "min_calib_range and max_calib_range");
  }
  *num_in = NumInputs(T);
  *num_out = kNumOutputs;
  return MX_SUCCESS;
}

template <const OpTraits& T>
MXReturnValue InferTypeImpl(const std::unordered_map<std::string, std::string>& attrs,
                            std::vector<int>* in_types, std::vector<int>* out_types) {
  BatchNormAttrs parsed;
  std::string error;
  if (!ParseOpAttrs(T, attrs, &parsed, &error)) return Fail(T.name, error);
  const int data_type = in_types->at(kData);
  if (data_type >= 0 && !AcceptsData(T, data_type)) {
    return Fail(T.name,
                std::string("data must be ") + DataTypes(T) + ", got " + DTypeName(data_type));
  }
  for (int i = kGamma; i < NumInputs(T); ++i) {
    int& t = in_types->at(i);
    if (t >= 0 && t != kFloat32) {
      return Fail(T.name, std::string(kInputNames[i]) + " must be float32, got " + DTypeName(t));
    }
    t = kFloat32;
  }
  out_types->at(0) = FusedOutputType(parsed.act) == QuantType::kInt8 ? kInt8 : kUint8;
  out_types->at(1) = kFloat32;
  out_types->at(2) = kFloat32;
  return MX_SUCCESS;
}

template <const OpTraits& T>
MXReturnValue InferShapeImpl(const std::unordered_map<std::string, std::string>& attrs,
                             std::vector<std::vector<unsigned int>>* in_shapes,
                             std::vector<std::vector<unsigned int>>* out_shapes) {
  BatchNormAttrs parsed;
  std::string error;
  if (!ParseOpAttrs(T, attrs, &parsed, &error)) return Fail(T.name, error);
  const std::vector<unsigned int> data_shape = in_shapes->at(kData);
  if (!IsKnown(data_shape)) {
    return Fail(T.name, UnknownShapeError("data", data_shape));
  }
  int axis = 0;
  if (!ResolveAxis(parsed.axis, static_cast<int>(data_shape.size()), &axis)) {
    return Fail(T.name, "axis " + std::to_string(parsed.axis) +
                            " is out of range for data of shape " + DimsString(data_shape));
  }
  const std::vector<unsigned int> channel_shape{data_shape[axis]};
  const std::vector<unsigned int> scalar_shape{1};
  for (int i = kGamma; i < NumInputs(T); ++i) {
    const auto& expected = i < kMinData ? channel_shape : scalar_shape;
    auto& shape = in_shapes->at(i);
    if (!Compatible(shape, expected)) {
      return Fail(T.name, std::string(kInputNames[i]) + " has shape " + DimsString(shape) +
                              ", expected " + DimsString(expected) + " for data of shape " +
                              DimsString(data_shape) + " and axis " + std::to_string(parsed.axis));
    }
    shape = expected;
  }
  out_shapes->at(0) = data_shape;
  if (T.global_avg_pool) {
    for (size_t d = axis + 1; d < data_shape.size(); ++d) out_shapes->at(0)[d] = 1;
  }
  out_shapes->at(1) = scalar_shape;
  out_shapes->at(2) = scalar_shape;
  return MX_SUCCESS;
}

// moving_mean and moving_var are auxiliary states, as in MXNet's BatchNorm.
template <const OpTraits& T>
MXReturnValue MutateInputs(const std::unordered_map<std::string, std::string>& attrs,
                           std::vector<int>* input_indices) {
  input_indices->push_back(kMovingMean);
  input_indices->push_back(kMovingVar);
  return MX_SUCCESS;
}

// Checks the run-time tensors (imperative calls skip part of shape inference).
bool CheckTensors(const OpTraits& traits, const std::vector<MXTensor>& in,
                  const BatchNormAttrs& attrs, int* axis, std::string* error) {
  const MXTensor& data = in[kData];
  if (!AcceptsData(traits, data.dtype)) {
    *error = std::string("data must be ") + DataTypes(traits) + ", got " + DTypeName(data.dtype);
    return false;
  }
  if (data.shape.empty()) {
    *error = "data must have at least one dimension, got a 0-d tensor";
    return false;
  }
  if (data.size() == 0) {
    *error = "data of shape " + ShapeString(data.shape) + " is empty";
    return false;
  }
  if (!ResolveAxis(attrs.axis, static_cast<int>(data.shape.size()), axis)) {
    *error = "axis " + std::to_string(attrs.axis) + " is out of range for data of shape " +
             ShapeString(data.shape);
    return false;
  }
  for (int i = kGamma; i < NumInputs(traits); ++i) {
    const int64_t expected = i < kMinData ? data.shape[*axis] : 1;
    if (in[i].dtype != kFloat32 || in[i].shape.size() != 1 || in[i].shape[0] != expected) {
      *error = std::string(kInputNames[i]) + " must be float32 of shape (" +
               std::to_string(expected) + ",), got " + DTypeName(in[i].dtype) + " of shape " +
               ShapeString(in[i].shape);
      return false;
    }
  }
  return true;
}

MXReturnValue Compute(const OpTraits& traits, const BatchNormAttrs& attrs,
                      const std::vector<MXTensor>& in, std::vector<MXTensor>* out) {
  if (static_cast<int>(in.size()) != NumInputs(traits) || out->size() != kNumOutputs) {
    return Fail(traits.name,
                "expects " + std::to_string(NumInputs(traits)) + " inputs and 3 outputs");
  }
  std::string error;
  int axis = 0;
  if (!CheckTensors(traits, in, attrs, &axis, &error)) return Fail(traits.name, error);
  const MXTensor& data = in[kData];

  const QuantType out_type = FusedOutputType(attrs.act);
  ScaleShiftShape shape{1, data.shape[axis], 1, dnnl::memory::data_type::f32, ToDnnl(out_type)};
  for (int d = 0; d < axis; ++d) shape.outer *= data.shape[d];
  for (size_t d = axis + 1; d < data.shape.size(); ++d) shape.inner *= data.shape[d];

  const ChannelParams params{Floats(in[kGamma]), Floats(in[kBeta]), Floats(in[kMovingMean]),
                             Floats(in[kMovingVar]), shape.channels};
  FoldedScaleShift folded;
  bool folded_ok = false;
  QuantType in_type = QuantType::kInt8;
  const bool integer_data = ToQuantType(data.dtype, &in_type);
  if (integer_data) shape.src_type = ToDnnl(in_type);
  if (traits.float_input) {  // the values themselves, whatever their type
    folded_ok =
        FoldScaleShiftFloatInput(attrs, params, out_type, &folded, &error, traits.global_avg_pool);
  } else {
    folded_ok = FoldScaleShift(attrs, params, *Floats(in[kMinData]), *Floats(in[kMaxData]), in_type,
                               out_type, &folded, &error, traits.global_avg_pool);
  }
  if (!folded_ok) return Fail(traits.name, error);
  shape.negative_slope = folded.negative_slope;
  shape.clamp_lo = folded.clamp_lo;
  shape.clamp_hi = folded.clamp_hi;
  shape.curve = folded.curve;
  if (traits.global_avg_pool) {
    // The mean of each channel's unrounded BN+act values, in the output range.
    const MeanShape mean_shape{shape.outer, shape.channels, shape.inner, MeanLayout::kPlanar};
    const MeanSource source = integer_data ? MeanSourceOf(in_type) : MeanSource::kFloat32;
    MeanOfActivation(mean_shape, source, data.data_ptr, folded, out_type, (*out)[0].data_ptr);
  } else {
    SharedKernel().Run(shape, data.data_ptr, folded.scale.data(), folded.shift.data(),
                       folded.output_scale, (*out)[0].data_ptr);
  }
  *(*out)[1].data<float>() = folded.min_output;
  *(*out)[2].data<float>() = folded.max_output;
  return MX_SUCCESS;
}

template <const OpTraits& T>
MXReturnValue Forward(const std::unordered_map<std::string, std::string>& attrs,
                      std::vector<MXTensor>* inputs, std::vector<MXTensor>* outputs,
                      const OpResource& /*res*/) {
  return Guarded(T.name, [&] {
    BatchNormAttrs parsed;
    std::string error;
    if (!ParseOpAttrs(T, attrs, &parsed, &error)) return Fail(T.name, error);
    return Compute(T, parsed, *inputs, outputs);
  });
}

// The entry points registered with MXNet.
template <const OpTraits& T>
MXReturnValue ParseAttrs(const std::unordered_map<std::string, std::string>& attrs, int* num_in,
                         int* num_out) {
  return Guarded(T.name, [&] { return ParseAttrsImpl<T>(attrs, num_in, num_out); });
}

template <const OpTraits& T>
MXReturnValue InferType(const std::unordered_map<std::string, std::string>& attrs,
                        std::vector<int>* in_types, std::vector<int>* out_types) {
  return Guarded(T.name, [&] { return InferTypeImpl<T>(attrs, in_types, out_types); });
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
  return Guarded(T.name, [&] { return InferShapeImpl<T>(attrs, in_shapes, out_shapes); });
}

}  // namespace
}  // namespace bnq

BNQ_REGISTER_OP_OF_TRAITS(_contrib_quantized_batch_norm, bnq::kBatchNorm);
BNQ_REGISTER_OP_OF_TRAITS(_contrib_quantized_batch_norm_relu, bnq::kBatchNormRelu);
BNQ_REGISTER_OP_OF_TRAITS(_contrib_quantized_batch_norm_relu_global_avg_pool,
                          bnq::kBatchNormReluPool);
BNQ_REGISTER_OP_OF_TRAITS(_contrib_quantized_batch_norm_act_global_avg_pool,
                          bnq::kBatchNormActPool);
BNQ_REGISTER_OP_OF_TRAITS(_contrib_batch_norm_quantize, bnq::kFloatBatchNorm);
BNQ_REGISTER_OP_OF_TRAITS(_contrib_batch_norm_relu_quantize, bnq::kFloatBatchNormRelu);
BNQ_REGISTER_OP_OF_TRAITS(_contrib_quantized_batch_norm_act, bnq::kBatchNormAct);
BNQ_REGISTER_OP_OF_TRAITS(_contrib_batch_norm_act_quantize, bnq::kFloatBatchNormAct);
BNQ_REGISTER_OP_OF_TRAITS(_contrib_batch_norm_act_global_avg_pool_quantize,
                          bnq::kFloatBatchNormActPool);
