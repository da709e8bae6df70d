// Attribute parsing for the quantized BatchNorm ops.
//
// MXNet writes only the attributes a user set into a symbol's JSON, so the
// defaults of MXNet 1.9.1's BatchNormParam are applied here.  Every value is
// parsed strictly: a malformed string is an error, never a silent default.
#pragma once

#include <string>
#include <unordered_map>

#include "pooling_attrs.h"

namespace bnq {

// The activation applied to the BatchNorm's real output before quantizing:
// none (_contrib_quantized_batch_norm), ReLU (the _relu ops), or as the
// attributes of the _act ops give it, in MXNet's spellings: act_type 'relu',
// 'clip' with a_min <= a_max (clip / ReLU6), 'leaky' with slope (LeakyReLU,
// MXNet's default slope 0.25), and the curves MXNet's convolution fusion
// takes: 'sigmoid', 'tanh', 'softrelu' (Activation) and 'gelu' (LeakyReLU,
// the erf form).
struct FusedActivation {
  enum class Kind { kNone, kRelu, kClip, kLeaky, kSigmoid, kTanh, kSoftRelu, kGelu };
  Kind kind = Kind::kNone;
  float a_min = 0.f;
  float a_max = 0.f;
  float slope = 0.25f;
};

// The activation's output cannot be negative (the op then writes uint8).
bool NonNegative(const FusedActivation& act);

// The kind an act_type names (MXNet's spellings above); kNone if none.
FusedActivation::Kind ActivationKind(const std::string& act_type);

// A curve: an activation that does not commute with a positive scale
// (sigmoid, tanh, softrelu, gelu), so it must see real values, not levels.
bool IsCurve(const FusedActivation& act);

// For the ops that average after the activation (_global_avg_pool): the
// mean is taken in levels, which only the linear activations allow.  False
// with the error naming `attrs`' act_type for a curve.
bool CheckActivationBeforeMean(const FusedActivation& act,
                               const std::unordered_map<std::string, std::string>& attrs,
                               std::string* error);

// act(y) for a real value y.
double Activate(const FusedActivation& act, double y);

struct BatchNormAttrs {
  // Defaults of mxnet::op::BatchNormParam (src/operator/nn/batch_norm-inl.h).
  double eps = 1e-3;
  bool fix_gamma = true;
  int axis = 1;
  // Parsed (so that a malformed value is an error, as in MXNet) but not used:
  // inference always normalizes with the moving statistics, and the
  // quantized ops have no mean/var outputs (the graph pass leaves a BatchNorm
  // with output_mean_var to MXNet) and no cuDNN.
  double momentum = 0.9;
  bool use_global_stats = false;
  bool output_mean_var = false;
  bool cudnn_off = false;
  // Calibrated output range, written by MXNet's quantization flow.
  bool has_calib_range = false;
  float min_calib_range = 0.f;
  float max_calib_range = 0.f;
  // Set from act_type/a_min/a_max/slope for the _act ops, by the op for the
  // _relu ops.
  FusedActivation act;
};

// Parses `attrs` into `out`.  Keys of the form "__name__" (MXNet's hidden
// attributes) are ignored; any other unknown key is an error, and so are the
// activation's keys unless `with_activation` (then act_type is required).
// Returns false and sets `error` on failure.
bool ParseBatchNormAttrs(const std::unordered_map<std::string, std::string>& attrs,
                         BatchNormAttrs* out, std::string* error, bool with_activation = false);

// The attributes of _contrib_quantized_concat_batch_norm: a BatchNorm (with
// an optional activation, act_type absent for none) over the concatenation
// of num_args inputs along `dim` (MXNet's Concat attributes, dim 1 by
// default), which must be the BatchNorm's axis.  With `avg_pool`
// (_contrib_quantized_concat_avg_pool_batch_norm) Pooling's attributes too
// (pool_type 'avg' or absent): the average pooling between the concat and
// the BatchNorm.
struct ConcatBatchNormAttrs {
  BatchNormAttrs bn;
  int num_args = 0;
  int dim = 1;
  bool avg_pool = false;
  PoolingAttrs pool;
};

bool ParseConcatBatchNormAttrs(const std::unordered_map<std::string, std::string>& attrs,
                               ConcatBatchNormAttrs* out, std::string* error,
                               bool avg_pool = false);

// The attributes of _contrib_quantized_avg_pool_batch_norm: Pooling's
// (pool_type 'avg' or absent) and the BatchNorm's, with an optional
// activation (act_type absent for none); axis must be 1.
struct AvgPoolBatchNormAttrs {
  PoolingAttrs pool;
  BatchNormAttrs bn;
};

bool ParseAvgPoolBatchNormAttrs(const std::unordered_map<std::string, std::string>& attrs,
                                AvgPoolBatchNormAttrs* out, std::string* error);

// Resolves a possibly negative axis against `ndim`; returns false if out of range.
bool ResolveAxis(int axis, int ndim, int* resolved);

}  // namespace bnq
