// Registers _contrib_quantized_avg_pooling: MXNet's quantized average pooling
// (_contrib_quantized_pooling with pool_type 'avg', the same inputs data,
// min_data, max_data and outputs) that writes the mean in its own calibrated
// range (min_calib_range, max_calib_range: the pooled output's) instead of
// the input's.  MXNet's int8 pooling rounds the mean of the rounded inputs a
// second time at the input's step; the range of a mean is smaller, so its
// step is finer (densenet121's transitions: 1.1-1.25x).  Without a calibrated
// range, or with one wider than the input's (every mean lies within that),
// it passes the input range on and gives MXNet's op's bits.  Output: the input's
// type.  Attributes: Pooling's (kernel, stride, pad, global_pool,
// pooling_convention, count_include_pad, layout NCHW, pool_type 'avg').
#include <cmath>
#include <string>
#include <vector>

#include "avg_pooling_kernel.h"
#include "mxnet/lib_api.h"
#include "number_parsing.h"
#include "op_names.h"
#include "op_support.h"

using namespace mxnet::ext;  // NOLINT

namespace bnq {
namespace {

constexpr const char* kOp = kQuantizedAvgPoolingOp;

struct AvgPoolingAttrs {
  PoolingAttrs pool;
  bool calibrated = false;
  float min_calib = 0.f, max_calib = 0.f;
};

bool ParseRange(const std::string& text, bool* present, float* value) {
  *present = false;
  if (Trim(text) == "None") return true;
  double v = 0;
  if (!ParseDecimal(text, &v) || !std::isfinite(v) || std::fabs(v) > 3.0e38) return false;
  *present = true;
  *value = static_cast<float>(v);
  return true;
}

bool Parse(const std::unordered_map<std::string, std::string>& attrs, AvgPoolingAttrs* out,
           std::string* error) {
  AvgPoolingAttrs a;
  bool has_min = false, has_max = false;
  for (const auto& kv : attrs) {
    const std::string& key = kv.first;
    bool ok = true;
    if (key == "min_calib_range") {
      ok = ParseRange(kv.second, &has_min, &a.min_calib);
    } else if (key == "max_calib_range") {
      ok = ParseRange(kv.second, &has_max, &a.max_calib);
    } else if (key != "kernel" && key != "stride" && key != "pad" && key != "pool_type" &&
               key != "global_pool" && key != "pooling_convention" && key != "count_include_pad" &&
               key != "layout" && key != "cudnn_off" && key != "p_value" &&
               !IsHiddenAttribute(key)) {
      *error = "unknown attribute '" + key + "'";
      return false;
    }
    if (!ok) {
      *error = "cannot parse attribute " + key + "='" + kv.second + "'";
      return false;
    }
  }
  if (has_min != has_max) {
    *error = "min_calib_range and max_calib_range must be given together";
    return false;
  }
  if (has_min && a.min_calib > a.max_calib) {
    *error = "min_calib_range is greater than max_calib_range";
    return false;
  }
  a.calibrated = has_min;
  auto type = attrs.find("pool_type");
  if (type != attrs.end() && Trim(type->second) != "avg") {
    *error = "pool_type must be 'avg', got '" + type->second + "'";
    return false;
  }
  std::unordered_map<std::string, std::string> pooling = attrs;
  pooling["pool_type"] = "avg";
  if (!ParsePoolingAttrs(pooling, &a.pool, error)) return false;
  *out = a;
  return true;
}

MXReturnValue ParseAttrs(const std::unordered_map<std::string, std::string>& attrs, int* num_in,
                         int* num_out) {
  return Guarded(kOp, [&] {
    AvgPoolingAttrs parsed;
    std::string error;
    if (!Parse(attrs, &parsed, &error)) return Fail(kOp, error);
    *num_in = 3;
    *num_out = 3;
    return MX_SUCCESS;
  });
}

MXReturnValue InferType(const std::unordered_map<std::string, std::string>& /*attrs*/,
                        std::vector<int>* in_types, std::vector<int>* out_types) {
  QuantType unused;
  const int t = in_types->at(0);
  if (t >= 0 && !ToQuantType(t, &unused)) {
    return Fail(kOp, std::string("data must be int8 or uint8, got ") + DTypeName(t));
  }
  for (int i = 1; i < 3; ++i) {
    if (in_types->at(i) >= 0 && in_types->at(i) != kFloat32) {
      return Fail(kOp, "min_data and max_data must be float32");
    }
    in_types->at(i) = kFloat32;
  }
  out_types->at(0) = t;
  out_types->at(1) = out_types->at(2) = kFloat32;
  return MX_SUCCESS;
}

MXReturnValue InferSType(const std::unordered_map<std::string, std::string>& /*attrs*/,
                         std::vector<int>* in_stypes, std::vector<int>* out_stypes) {
  return DenseStorageOnly(kOp, in_stypes, out_stypes);
}

MXReturnValue InferShape(const std::unordered_map<std::string, std::string>& attrs,
                         std::vector<std::vector<unsigned int>>* in_shapes,
                         std::vector<std::vector<unsigned int>>* out_shapes) {
  return Guarded(kOp, [&] {
    AvgPoolingAttrs parsed;
    std::string error;
    if (!Parse(attrs, &parsed, &error)) return Fail(kOp, error);
    const std::vector<unsigned int> data = in_shapes->at(0);
    if (!IsKnown(data)) return Fail(kOp, UnknownShapeError("data", data));
    AvgPoolingShape shape;
    const dnnl::memory::dims dims(data.begin(), data.end());
    if (!MakeAvgPoolingShape(parsed.pool, dims, dnnl::memory::data_type::s8, &shape, &error)) {
      return Fail(kOp, error + ", got data of shape " + DimsString(data));
    }
    const std::vector<unsigned int> scalar{1};
    for (int i = 1; i < 3; ++i) {
      if (!Compatible(in_shapes->at(i), scalar)) return Fail(kOp, "a range must have shape (1,)");
      in_shapes->at(i) = scalar;
    }
    out_shapes->at(0).assign(shape.dst.begin(), shape.dst.end());
    out_shapes->at(1) = scalar;
    out_shapes->at(2) = scalar;
    return MX_SUCCESS;
  });
}

// Kernels of this op (one per process: the op is stateless, as the BatchNorm ops).
AvgPoolingKernel& SharedAvgPoolingKernel() {
  static AvgPoolingKernel* kernel = new AvgPoolingKernel();  // used until exit
  return *kernel;
}

MXReturnValue Forward(const std::unordered_map<std::string, std::string>& attrs,
                      std::vector<MXTensor>* inputs, std::vector<MXTensor>* outputs,
                      const OpResource& /*res*/) {
  return Guarded(kOp, [&] {
    AvgPoolingAttrs parsed;
    std::string error;
    if (!Parse(attrs, &parsed, &error)) return Fail(kOp, error);
    const std::vector<MXTensor>& in = *inputs;
    QuantType type;
    if (in.size() != 3 || !ToQuantType(in[0].dtype, &type)) {
      return Fail(kOp, "expects int8 or uint8 data, min_data and max_data");
    }
    for (int i = 1; i < 3; ++i) {
      if (in[i].dtype != kFloat32 || in[i].size() != 1) {
        return Fail(kOp, "min_data and max_data must be one float32 each");
      }
    }
    const float min_data = *Floats(in[1]), max_data = *Floats(in[2]);
    if (!std::isfinite(min_data) || !std::isfinite(max_data) || min_data > max_data) {
      return Fail(kOp, "invalid input range [" + std::to_string(min_data) + ", " +
                           std::to_string(max_data) + "]");
    }
    AvgPoolingShape shape;
    if (!MakeAvgPoolingShape(parsed.pool, in[0].shape, ToDnnl(type), &shape, &error)) {
      return Fail(kOp, error + ", got data of shape " + ShapeString(in[0].shape));
    }
    const AvgPoolingRange r = AvgPoolingOutputRange(parsed.calibrated, parsed.min_calib,
                                                    parsed.max_calib, min_data, max_data);
    SharedAvgPoolingKernel().Run(shape, in[0].data_ptr, r.scale, (*outputs)[0].data_ptr);
    *(*outputs)[1].data<float>() = r.min;
    *(*outputs)[2].data<float>() = r.max;
    return MX_SUCCESS;
  });
}

static_assert(SameName("_contrib_quantized_avg_pooling", kOp), "the op's name");

}  // namespace
}  // namespace bnq

REGISTER_OP(_contrib_quantized_avg_pooling)
    .setParseAttrs(bnq::ParseAttrs)
    .setInferType(bnq::InferType)
    .setInferSType(bnq::InferSType)
    .setInferShape(bnq::InferShape)
    .setForward(bnq::Forward, "cpu");
