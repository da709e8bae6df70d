// Attribute parsing for the quantized BatchNorm ops.
//
// MXNet writes only the attributes a user set into a symbol's JSON, so the
// defaults of MXNet 1.9.1's BatchNormParam are applied here.  Every value is
// parsed strictly: a malformed string is an error, never a silent default.
#pragma once

#include <string>
#include <unordered_map>

namespace bnq {

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
};

// Parses `attrs` into `out`.  Keys of the form "__name__" (MXNet's hidden
// attributes) are ignored; any other unknown key is an error.
// Returns false and sets `error` on failure.
bool ParseBatchNormAttrs(const std::unordered_map<std::string, std::string>& attrs,
                         BatchNormAttrs* out, std::string* error);

// Resolves a possibly negative axis against `ndim`; returns false if out of range.
bool ResolveAxis(int axis, int ndim, int* resolved);

}  // namespace bnq
