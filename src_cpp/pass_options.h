// Options of the BNQ_QUANTIZE graph pass, parsed from the strings that
// Symbol.optimize_for(..., **options) hands over.
//
//   relu_calib_ranges      "act_node=min:max;..."  post-ReLU range of the
//                          quantized ReLU (by its node name) to fuse
//   excluded_sym_names     "name;name;..."  nodes to leave alone
//   excluded_op_names      "op;op;..."      operators to leave alone
//   quantized_dtype        int8 | uint8 | auto (default auto): type of a
//                          quantize node the pass inserts
//   fuse_relu, fuse_pooling, quantize_fp32_bn   true | false (default true)
#pragma once

#include <map>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>

namespace bnq {

struct PassOptions {
  std::map<std::string, std::pair<float, float>> relu_calib_ranges;
  std::set<std::string> excluded_sym_names;
  std::set<std::string> excluded_op_names;
  std::string quantized_dtype = "auto";
  bool fuse_relu = true;
  bool fuse_pooling = true;
  bool quantize_fp32_bn = true;
};

// Returns false and sets `error` for an unknown key or a malformed value.
bool ParsePassOptions(const std::unordered_map<std::string, std::string>& options, PassOptions* out,
                      std::string* error);

}  // namespace bnq
