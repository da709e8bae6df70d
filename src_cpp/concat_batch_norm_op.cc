// Registers _contrib_quantized_concat_batch_norm: a quantized BatchNorm (with
// an optional fused activation, the _act ops' attributes) over the
// concatenation of int8/uint8 inputs along its channel axis, each input read
// in its own range.  MXNet's quantized concat first rescales every input to
// the largest range (and uint8 into int8 beside an int8 input): the BatchNorm
// after it then amplifies the coarse steps of the channels from a small range
// (densenet121: 4.7 dB of logit SQNR).  Here each input's channels are folded
// with that input's step (FoldConcatScaleShift) and written to their place in
// the output: no rescaled copy, no concatenated tensor.
//
// Inputs: data_0 ... data_{n-1}, gamma, beta, moving_mean, moving_var, then
// min_0, max_0, ..., min_{n-1}, max_{n-1} (MXNet's quantized concat pairs
// them so).  Attributes: num_args = n, dim (= the BatchNorm's axis), the
// BatchNorm's, optionally act_type (a_min, a_max, slope).
// Outputs: output (uint8 after an activation that cannot be negative, else
// int8), min_output, max_output.
//
// _contrib_quantized_concat_batch_norm_global_avg_pool: the same followed by
// the mean over every dimension after the channel axis (as the
// _act_global_avg_pool op: from the unrounded values, in the calibrated
// range of the pooled output; relu, clip and leaky only).
//
// _contrib_quantized_concat_avg_pool_batch_norm (and its _global_avg_pool
// form): an average pooling between the concat and the BatchNorm, with
// Pooling's attributes (pool_type 'avg'); NCHW data, dim and axis 1.  The
// pooling works on each channel alone, so each input is pooled with the
// BatchNorm of its channels in its own range (the kernels of
// _contrib_quantized_avg_pool_batch_norm: the BatchNorm of the unrounded
// window means) and written to its channels of the output.
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

struct OpTraits {
  const char* name;
  bool global_avg_pool;
  bool avg_pool;  // an average pooling between the concat and the BatchNorm
};
constexpr OpTraits kConcatBatchNorm{kQuantizedConcatBatchNormOp, false, false};
constexpr OpTraits kConcatBatchNormPool{kQuantizedConcatBatchNormPoolOp, true, false};
constexpr OpTraits kConcatAvgPoolBatchNorm{kQuantizedConcatAvgPoolBatchNormOp, false, true};
constexpr OpTraits kConcatAvgPoolBatchNormPool{kQuantizedConcatAvgPoolBatchNormPoolOp, true, true};

constexpr int kNumParams = 4;  // gamma, beta, moving_mean, moving_var
const char* const kParamNames[kNumParams] = {"gamma", "beta", "moving_mean", "moving_var"};

// Where each input is, for num_args inputs.
struct Inputs {
  int n;
  int Data(int i) const { return i; }
  int Param(int p) const { return n + p; }
  int Min(int i) const { return n + kNumParams + 2 * i; }
  int Max(int i) const { return n + kNumParams + 2 * i + 1; }
  int Count() const { return 3 * n + kNumParams; }
};

template <const OpTraits& T>
bool Parse(const std::unordered_map<std::string, std::string>& attrs, ConcatBatchNormAttrs* parsed,
           std::string* error) {
  if (!ParseConcatBatchNormAttrs(attrs, parsed, error, T.avg_pool)) return false;
  return !T.global_avg_pool || CheckActivationBeforeMean(parsed->bn.act, attrs, error);
}

QuantType OutputType(const ConcatBatchNormAttrs& a) { return FusedOutputType(a.bn.act); }

template <const OpTraits& T>
MXReturnValue ParseAttrs(const std::unordered_map<std::string, std::string>& attrs, int* num_in,
                         int* num_out) {
  return Guarded(T.name, [&] {
    ConcatBatchNormAttrs parsed;
    std::string error;
    if (!Parse<T>(attrs, &parsed, &error)) return Fail(T.name, error);
    *num_in = Inputs{parsed.num_args}.Count();
    *num_out = 3;
    return MX_SUCCESS;
  });
}

template <const OpTraits& T>
MXReturnValue InferType(const std::unordered_map<std::string, std::string>& attrs,
                        std::vector<int>* in_types, std::vector<int>* out_types) {
  return Guarded(T.name, [&] {
    ConcatBatchNormAttrs parsed;
    std::string error;
    if (!Parse<T>(attrs, &parsed, &error)) return Fail(T.name, error);
    const Inputs in{parsed.num_args};
    for (int i = 0; i < in.n; ++i) {
      QuantType unused;
      const int t = in_types->at(in.Data(i));
      if (t >= 0 && !ToQuantType(t, &unused)) {
        return Fail(T.name,
                    "data_" + std::to_string(i) + " must be int8 or uint8, got " + DTypeName(t));
      }
    }
    for (int i = in.Param(0); i < in.Count(); ++i) {
      int& t = in_types->at(i);
      if (t >= 0 && t != kFloat32) {
        return Fail(T.name, "input " + std::to_string(i) + " must be float32, got " + DTypeName(t));
      }
      t = kFloat32;
    }
    out_types->at(0) = OutputType(parsed) == QuantType::kInt8 ? kInt8 : kUint8;
    out_types->at(1) = kFloat32;
    out_types->at(2) = kFloat32;
    return MX_SUCCESS;
  });
}

template <const OpTraits& T>
MXReturnValue InferSType(const std::unordered_map<std::string, std::string>& /*attrs*/,
                         std::vector<int>* in_stypes, std::vector<int>* out_stypes) {
  return DenseStorageOnly(T.name, in_stypes, out_stypes);
}

// The channel axis of every input, checked against `dim`; the output shape.
// `shapes` are the data inputs' (all known).
template <typename Shape>
bool ConcatShape(const ConcatBatchNormAttrs& a, const std::vector<Shape>& shapes, int* axis,
                 Shape* out, std::string* error) {
  const int ndim = static_cast<int>(shapes[0].size());
  int dim = 0;
  if (ndim == 0 || !ResolveAxis(a.bn.axis, ndim, axis) || !ResolveAxis(a.dim, ndim, &dim)) {
    *error = "axis " + std::to_string(a.bn.axis) + " and dim " + std::to_string(a.dim) +
             " must be within the " + std::to_string(ndim) + " dimensions of data_0";
    return false;
  }
  if (dim != *axis) {
    *error = "dim " + std::to_string(a.dim) + " must be the BatchNorm's axis " +
             std::to_string(a.bn.axis) + " (a BatchNorm over the concatenated channels)";
    return false;
  }
  *out = shapes[0];
  (*out)[*axis] = 0;
  for (size_t i = 0; i < shapes.size(); ++i) {
    bool same = shapes[i].size() == shapes[0].size();
    for (int d = 0; same && d < ndim; ++d) same = d == *axis || shapes[i][d] == shapes[0][d];
    if (!same) {
      *error = "data_" + std::to_string(i) + " has shape " + ShapeString(shapes[i]) +
               ", which cannot be concatenated with data_0's " + ShapeString(shapes[0]) +
               " along axis " + std::to_string(*axis);
      return false;
    }
    (*out)[*axis] += shapes[i][*axis];
  }
  return true;
}

template <const OpTraits& T>
MXReturnValue InferShape(const std::unordered_map<std::string, std::string>& attrs,
                         std::vector<std::vector<unsigned int>>* in_shapes,
                         std::vector<std::vector<unsigned int>>* out_shapes) {
  return Guarded(T.name, [&] {
    ConcatBatchNormAttrs parsed;
    std::string error;
    if (!Parse<T>(attrs, &parsed, &error)) return Fail(T.name, error);
    const Inputs in{parsed.num_args};
    std::vector<std::vector<unsigned int>> data;
    for (int i = 0; i < in.n; ++i) {
      data.push_back(in_shapes->at(in.Data(i)));
      if (!IsKnown(data.back())) {
        return Fail(T.name, UnknownShapeError("data_" + std::to_string(i), data.back()));
      }
    }
    int axis = 0;
    std::vector<unsigned int> out;
    if (!ConcatShape(parsed, data, &axis, &out, &error)) return Fail(T.name, error);
    if (T.avg_pool) {
      AvgPoolingShape pool;
      const dnnl::memory::dims dims(out.begin(), out.end());
      if (!MakeAvgPoolingShape(parsed.pool, dims, dnnl::memory::data_type::s8, &pool, &error)) {
        return Fail(T.name, error + ", got concatenated data of shape " + DimsString(out));
      }
      out.assign(pool.dst.begin(), pool.dst.end());
    }
    const std::vector<unsigned int> channels{out[axis]}, scalar{1};
    for (int i = in.Param(0); i < in.Count(); ++i) {
      const auto& expected = i < in.Min(0) ? channels : scalar;
      auto& shape = in_shapes->at(i);
      if (!Compatible(shape, expected)) {
        return Fail(T.name, "input " + std::to_string(i) + " has shape " + DimsString(shape) +
                                ", expected " + DimsString(expected));
      }
      shape = expected;
    }
    if (T.global_avg_pool) {
      for (size_t d = axis + 1; d < out.size(); ++d) out[d] = 1;
    }
    out_shapes->at(0) = out;
    out_shapes->at(1) = scalar;
    out_shapes->at(2) = scalar;
    return MX_SUCCESS;
  });
}

// moving_mean and moving_var are auxiliary states, as in MXNet's BatchNorm.
template <const OpTraits& T>
MXReturnValue MutateInputs(const std::unordered_map<std::string, std::string>& attrs,
                           std::vector<int>* input_indices) {
  ConcatBatchNormAttrs parsed;
  std::string error;
  if (!Parse<T>(attrs, &parsed, &error)) return Fail(T.name, error);
  input_indices->push_back(Inputs{parsed.num_args}.Param(2));
  input_indices->push_back(Inputs{parsed.num_args}.Param(3));
  return MX_SUCCESS;
}

// Checks the run-time tensors (imperative calls skip part of shape
// inference); sets the channel axis and the output's channels.
bool CheckTensors(const ConcatBatchNormAttrs& a, const std::vector<MXTensor>& t, int* axis,
                  int64_t* channels, std::string* error) {
  const Inputs in{a.num_args};
  if (static_cast<int>(t.size()) != in.Count()) {
    *error = "expects " + std::to_string(in.Count()) + " inputs for num_args " +
             std::to_string(in.n) + ", got " + std::to_string(t.size());
    return false;
  }
  std::vector<std::vector<int64_t>> shapes;
  for (int i = 0; i < in.n; ++i) {
    QuantType unused;
    const MXTensor& d = t[in.Data(i)];
    if (!ToQuantType(d.dtype, &unused)) {
      *error = "data_" + std::to_string(i) + " must be int8 or uint8, got " + DTypeName(d.dtype);
      return false;
    }
    if (d.shape.empty() || d.size() == 0) {
      *error = "data_" + std::to_string(i) + " of shape " + ShapeString(d.shape) + " is empty";
      return false;
    }
    shapes.push_back(d.shape);
  }
  std::vector<int64_t> out;
  if (!ConcatShape(a, shapes, axis, &out, error)) return false;
  *channels = out[*axis];
  for (int i = in.Param(0); i < in.Count(); ++i) {
    const int64_t expected = i < in.Min(0) ? *channels : 1;
    if (t[i].dtype != kFloat32 || t[i].shape.size() != 1 || t[i].shape[0] != expected) {
      const std::string name = i < in.Min(0) ? kParamNames[i - in.Param(0)]
                                             : "input " + std::to_string(i) + " (a range end)";
      *error = name + " must be float32 of shape (" + std::to_string(expected) + ",), got " +
               DTypeName(t[i].dtype) + " of shape " + ShapeString(t[i].shape);
      return false;
    }
  }
  return true;
}

// The average pooling forms: each input pooled with the BatchNorm of its
// channels (or, `global`, the BN+act mean of its window means) into a
// scratch copy, then into its channels of the NCHW output `dst`.
bool ForwardPooledParts(const ConcatBatchNormAttrs& a, bool global, const std::vector<MXTensor>& t,
                        const std::vector<ConcatInput>& parts,
                        const std::vector<FoldedScaleShift>& folded, QuantType out_type,
                        int64_t channels, uint8_t* dst, std::string* error) {
  const Inputs in{a.num_args};
  std::vector<uint8_t> pooled;  // one byte per element
  int64_t begin = 0;
  for (int i = 0; i < in.n; ++i) {
    const MXTensor& d = t[in.Data(i)];
    AvgPoolingShape pool;
    if (!MakeAvgPoolingShape(a.pool, d.shape, ToDnnl(parts[i].type), &pool, error)) {
      *error += ", got data_" + std::to_string(i) + " of shape " + ShapeString(d.shape);
      return false;
    }
    const int64_t c = parts[i].channels;
    const int64_t inner = global ? 1 : pool.dst[2] * pool.dst[3];
    pooled.resize(pool.dst[0] * c * inner);
    if (global) {
      SharedAvgPoolMeanKernel().Run(pool, d.data_ptr, folded[i], out_type, pooled.data());
    } else {
      SharedAvgPoolBatchNormKernel().Run(MakeAvgPoolBatchNormShape(pool, folded[i], out_type),
                                         d.data_ptr, folded[i], pooled.data());
    }
    for (int64_t n = 0; n < pool.dst[0]; ++n) {
      std::copy(pooled.begin() + n * c * inner, pooled.begin() + (n + 1) * c * inner,
                dst + (n * channels + begin) * inner);
    }
    begin += c;
  }
  return true;
}

template <const OpTraits& T>
MXReturnValue Forward(const std::unordered_map<std::string, std::string>& attrs,
                      std::vector<MXTensor>* inputs, std::vector<MXTensor>* outputs,
                      const OpResource& /*res*/) {
  return Guarded(T.name, [&] {
    ConcatBatchNormAttrs parsed;
    std::string error;
    if (!Parse<T>(attrs, &parsed, &error)) return Fail(T.name, error);
    const std::vector<MXTensor>& t = *inputs;
    int axis = 0;
    int64_t channels = 0;
    if (!CheckTensors(parsed, t, &axis, &channels, &error)) return Fail(T.name, error);
    const Inputs in{parsed.num_args};
    std::vector<ConcatInput> parts;
    for (int i = 0; i < in.n; ++i) {
      const MXTensor& d = t[in.Data(i)];
      ConcatInput part{d.shape[axis], *Floats(t[in.Min(i)]), *Floats(t[in.Max(i)]),
                       QuantType::kInt8};
      ToQuantType(d.dtype, &part.type);
      parts.push_back(part);
    }
    const ChannelParams params{Floats(t[in.Param(0)]), Floats(t[in.Param(1)]),
                               Floats(t[in.Param(2)]), Floats(t[in.Param(3)]), channels};
    const QuantType out_type = OutputType(parsed);
    std::vector<FoldedScaleShift> folded;
    if (!FoldConcatScaleShift(parsed.bn, params, parts, out_type, &folded, &error,
                              T.global_avg_pool)) {
      return Fail(T.name, error);
    }
    const MXTensor& first = t[in.Data(0)];
    int64_t outer = 1, inner = 1;
    for (int d = 0; d < axis; ++d) outer *= first.shape[d];
    for (size_t d = axis + 1; d < first.shape.size(); ++d) inner *= first.shape[d];
    auto* dst = static_cast<uint8_t*>((*outputs)[0].data_ptr);  // one byte per element
    if (T.avg_pool) {
      if (!ForwardPooledParts(parsed, T.global_avg_pool, t, parts, folded, out_type, channels, dst,
                              &error)) {
        return Fail(T.name, error);
      }
      *(*outputs)[1].data<float>() = folded[0].min_output;
      *(*outputs)[2].data<float>() = folded[0].max_output;
      return MX_SUCCESS;
    }
    int64_t begin = 0;
    if (T.global_avg_pool) {
      // Each part's means (outer x its channels), then into their place in
      // the (outer, channels) output.
      std::vector<uint8_t> means;
      for (int i = 0; i < in.n; ++i) {
        const int64_t c = parts[i].channels;
        means.resize(outer * c);
        MeanOfActivation({outer, c, inner, MeanLayout::kPlanar}, MeanSourceOf(parts[i].type),
                         t[in.Data(i)].data_ptr, folded[i], out_type, means.data());
        for (int64_t o = 0; o < outer; ++o) {
          std::copy(means.begin() + o * c, means.begin() + (o + 1) * c, dst + o * channels + begin);
        }
        begin += c;
      }
      *(*outputs)[1].data<float>() = folded[0].min_output;
      *(*outputs)[2].data<float>() = folded[0].max_output;
      return MX_SUCCESS;
    }
    for (int i = 0; i < in.n; ++i) {
      const FoldedScaleShift& f = folded[i];
      ScaleShiftShape shape{outer, parts[i].channels, inner, ToDnnl(parts[i].type),
                            ToDnnl(out_type)};
      shape.negative_slope = f.negative_slope;
      shape.clamp_lo = f.clamp_lo;
      shape.clamp_hi = f.clamp_hi;
      shape.curve = f.curve;
      shape.dst_channels = channels;
      SharedKernel().Run(shape, t[in.Data(i)].data_ptr, f.scale.data(), f.shift.data(),
                         f.output_scale, dst + begin * inner);
      begin += parts[i].channels;
    }
    *(*outputs)[1].data<float>() = folded[0].min_output;
    *(*outputs)[2].data<float>() = folded[0].max_output;
    return MX_SUCCESS;
  });
}

}  // namespace
}  // namespace bnq

BNQ_REGISTER_OP_OF_TRAITS(_contrib_quantized_concat_batch_norm, bnq::kConcatBatchNorm);
BNQ_REGISTER_OP_OF_TRAITS(_contrib_quantized_concat_batch_norm_global_avg_pool,
                          bnq::kConcatBatchNormPool);
BNQ_REGISTER_OP_OF_TRAITS(_contrib_quantized_concat_avg_pool_batch_norm,
                          bnq::kConcatAvgPoolBatchNorm);
BNQ_REGISTER_OP_OF_TRAITS(_contrib_quantized_concat_avg_pool_batch_norm_global_avg_pool,
                          bnq::kConcatAvgPoolBatchNormPool);
