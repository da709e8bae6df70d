#include "region_node_attrs.h"

#include <cmath>
#include <unordered_map>

#include "../number_parsing.h"
#include "../op_names.h"

namespace bnq {
namespace region {
namespace {

using Attrs = std::unordered_map<std::string, std::string>;

bool Bool(const Attrs& attrs, const char* key, bool fallback, bool* value, std::string* why) {
  auto it = attrs.find(key);
  if (it == attrs.end()) {
    *value = fallback;
    return true;
  }
  if (ParseBool(it->second, value)) return true;
  *why = std::string("cannot parse ") + key + "='" + it->second + "'";
  return false;
}

// An optional float written by MXNet ("None" when unset).
bool OptionalFloat(const Attrs& attrs, const char* key, bool* present, float* value,
                   std::string* why) {
  auto it = attrs.find(key);
  *present = false;
  if (it == attrs.end() || Trim(it->second) == "None") return true;
  double v = 0;
  if (!ParseDecimal(it->second, &v) || !std::isfinite(v)) {
    *why = std::string("cannot parse ") + key + "='" + it->second + "'";
    return false;
  }
  *present = true;
  *value = static_cast<float>(v);
  return true;
}

// min_calib_range and max_calib_range: both or neither ("None" is unset).
bool CalibRange(const Attrs& attrs, bool* calibrated, float* min, float* max, std::string* why) {
  bool has_min = false, has_max = false;
  if (!OptionalFloat(attrs, "min_calib_range", &has_min, min, why) ||
      !OptionalFloat(attrs, "max_calib_range", &has_max, max, why)) {
    return false;
  }
  if (has_min != has_max) {
    *why = "only one of min/max_calib_range is set";
    return false;
  }
  *calibrated = has_min;
  return true;
}

// Attributes the region knows for `op`; any other (not hidden) key stops the claim.
bool OnlyKnownKeys(const Attrs& attrs, std::initializer_list<const char*> known, std::string* why) {
  for (const auto& kv : attrs) {
    if (IsHiddenAttribute(kv.first)) continue;
    bool found = false;
    for (const char* k : known) found = found || kv.first == k;
    if (!found) {
      *why = "attribute " + kv.first + "='" + kv.second + "' is not supported in regions";
      return false;
    }
  }
  return true;
}

// A spatial parameter: given, or `fallback` repeated for each spatial dim.
bool Spatial(const Attrs& attrs, const char* key, size_t dims, int64_t fallback,
             std::vector<int64_t>* out, std::string* why) {
  auto it = attrs.find(key);
  if (it == attrs.end() || Trim(it->second) == "()" || Trim(it->second) == "[]") {
    out->assign(dims, fallback);
    return true;
  }
  if (!ParseTuple(it->second, out) || out->size() != dims) {
    *why = std::string("cannot parse ") + key + "='" + it->second + "' for " +
           std::to_string(dims) + " spatial dimensions";
    return false;
  }
  return true;
}

bool ParseConvolution(const Attrs& a, ConvAttrs* conv, std::string* why) {
  if (!OnlyKnownKeys(a,
                     {"kernel", "stride", "dilate", "pad", "num_filter", "num_group", "no_bias",
                      "layout", "workspace", "cudnn_tune", "cudnn_off"},
                     why)) {
    return false;
  }
  auto k = a.find("kernel");
  if (k == a.end() || !ParseTuple(k->second, &conv->kernel)) {
    *why = "the convolution has no readable kernel";
    return false;
  }
  const size_t dims = conv->kernel.size();
  if (dims != 2) {
    *why = "only 2-D convolutions are supported in regions (kernel " + k->second + ")";
    return false;
  }
  auto layout = a.find("layout");
  if (layout != a.end() && Trim(layout->second) != "NCHW" && Trim(layout->second) != "None") {
    *why = "convolution layout " + layout->second + " is not supported in regions";
    return false;
  }
  if (!Spatial(a, "stride", dims, 1, &conv->stride, why) ||
      !Spatial(a, "dilate", dims, 1, &conv->dilate, why) ||
      !Spatial(a, "pad", dims, 0, &conv->pad, why)) {
    return false;
  }
  int v = 0;
  auto nf = a.find("num_filter");
  if (nf == a.end() || !ParseInteger(nf->second, &v) || v <= 0) {
    *why = "the convolution has no valid num_filter";
    return false;
  }
  conv->num_filter = v;
  auto ng = a.find("num_group");
  if (ng != a.end()) {
    if (!ParseInteger(ng->second, &v) || v <= 0 || conv->num_filter % v != 0) {
      *why = "invalid num_group='" + ng->second + "'";
      return false;
    }
    conv->num_group = v;
  }
  for (size_t i = 0; i < dims; ++i) {
    if (conv->kernel[i] <= 0 || conv->stride[i] <= 0 || conv->dilate[i] <= 0 || conv->pad[i] < 0) {
      *why = "invalid kernel/stride/dilate/pad";
      return false;
    }
  }
  return Bool(a, "no_bias", false, &conv->no_bias, why);
}

std::string Attr(const Node* n, const char* key, const char* fallback) {
  auto it = n->attrs.find(key);
  return it == n->attrs.end() ? fallback : Trim(it->second);
}

bool FloatAttr(const Node* n, const char* key, double fallback, float* value) {
  auto it = n->attrs.find(key);
  double v = fallback;
  if (it != n->attrs.end() && !ParseDecimal(it->second, &v)) return false;
  *value = static_cast<float>(v);
  return std::isfinite(v);
}

// A fused activation node of a quantized convolution, as MXNet maps it.
bool ParseFusedAct(const Node* n, FusedAct* act, float* alpha, std::string* why) {
  *alpha = 0.f;
  const std::string type = Attr(n, "act_type", n->op == "LeakyReLU" ? "leaky" : "");
  if ((n->op == "Activation" && type == "relu") || n->op == "relu") {
    *act = FusedAct::kRelu;
    return true;
  }
  if (n->op == "LeakyReLU" && type == "leaky") {
    *act = FusedAct::kLeakyRelu;
    if (FloatAttr(n, "slope", 0.25, alpha)) return true;
  } else if (n->op == "LeakyReLU" && type == "gelu") {
    // MXNet applies it to the requantized (output-scaled) values, which is
    // not gelu of the real values; the region computes gelu of the real
    // values (see the README).
    *act = FusedAct::kGelu;
    return true;
  } else if (n->op == "clip") {
    float a_min = 0.f;
    *act = FusedAct::kBoundedRelu;
    if (FloatAttr(n, "a_min", 0.0, &a_min) && a_min == 0.f && FloatAttr(n, "a_max", 0.0, alpha)) {
      return true;
    }
  }
  *why = "fused activation " + n->op + (type.empty() ? std::string() : "(" + type + ")") +
         " is not supported in regions";
  return false;
}

bool ParseConv(const Node* node, ConvAttrs* conv, std::string* why) {
  const Attrs& a = node->attrs;
  if (!OnlyKnownKeys(a,
                     {"quantized", "with_bn", "with_act", "with_sum", "with_postsum_act",
                      "min_calib_range", "max_calib_range"},
                     why)) {
    return false;
  }
  bool quantized = false;
  if (!Bool(a, "quantized", false, &quantized, why) ||
      !Bool(a, "with_bn", false, &conv->with_bn, why) ||
      !Bool(a, "with_act", false, &conv->with_act, why) ||
      !Bool(a, "with_sum", false, &conv->with_sum, why) ||
      !Bool(a, "with_postsum_act", false, &conv->with_postsum_act, why)) {
    return false;
  }
  if (!quantized) {
    *why = "a float32 convolution (not quantized)";
    return false;
  }
  if (!CalibRange(a, &conv->calibrated, &conv->min_calib, &conv->max_calib, why)) return false;
  if (node->subgraphs.size() != 1) {
    *why = "the fused convolution has no subgraph";
    return false;
  }
  // The fused subgraph, in order: Convolution, [BatchNorm], [act], [elemwise_add], [act].
  bool seen_conv = false, seen_sum = false;
  for (size_t i = 0; i < node->subgraphs[0]->size(); ++i) {
    const Node* n = node->subgraphs[0]->getNode(i);
    if (n->op == "null") continue;
    if (n->op == "Convolution") {
      if (seen_conv || !ParseConvolution(n->attrs, conv, why)) {
        if (why->empty()) *why = "two convolutions in one fused op";
        return false;
      }
      seen_conv = true;
    } else if (n->op == "BatchNorm") {
      std::string error;
      if (!ParseBatchNormAttrs(n->attrs, &conv->bn, &error)) {
        *why = "fused BatchNorm: " + error;
        return false;
      }
    } else if (n->op == "elemwise_add" || n->op == "_plus" || n->op == "broadcast_add") {
      seen_sum = true;
    } else if (n->op == "Activation" || n->op == "relu" || n->op == "LeakyReLU" ||
               n->op == "clip") {
      FusedAct act;
      float alpha;
      if (!ParseFusedAct(n, &act, &alpha, why)) return false;
      if (seen_sum && act != FusedAct::kRelu) {
        *why = "a fused activation after the sum other than relu";
        return false;
      }
      if (!seen_sum) {
        conv->act = act;
        conv->act_alpha = alpha;
      }
    } else {
      *why = "fused op " + n->op + " is not supported in regions";
      return false;
    }
  }
  if (!seen_conv) {
    *why = "the fused op has no Convolution";
    return false;
  }
  if (seen_sum != conv->with_sum) {
    *why = "with_sum disagrees with the fused subgraph";
    return false;
  }
  if (conv->with_act != (conv->act != FusedAct::kNone)) {
    *why = "with_act disagrees with the fused subgraph";
    return false;
  }
  if (conv->with_postsum_act && !conv->with_sum) {
    *why = "with_postsum_act without with_sum";
    return false;
  }
  if (conv->act == FusedAct::kGelu && (conv->with_sum || !conv->calibrated)) {
    *why = conv->with_sum ? "a fused gelu before a sum is not run in regions"
                          : "a fused gelu of an uncalibrated convolution (int32 output) is not run "
                            "in regions";
    return false;
  }
  if (!conv->calibrated && conv->act == FusedAct::kBoundedRelu) {
    // With an int32 output nothing saturates: MXNet drops the clip.
    *why = "MXNet drops the clip of an uncalibrated convolution (int32 output)";
    return false;
  }
  return true;
}

bool ParsePooling(const Node* node, PoolingAttrs* pool, std::string* why) {
  if (!OnlyKnownKeys(node->attrs,
                     {"kernel", "stride", "pad", "pool_type", "global_pool", "pooling_convention",
                      "count_include_pad", "layout", "cudnn_off", "p_value"},
                     why)) {
    return false;
  }
  return ParsePoolingAttrs(node->attrs, pool, why);
}

bool ParseFullyConnected(const Node* node, FullyConnectedAttrs* fc, std::string* why) {
  const Attrs& a = node->attrs;
  if (!OnlyKnownKeys(a,
                     {"quantized", "enable_float_output", "with_eltwise", "min_calib_range",
                      "max_calib_range", "channel_wise_quantize"},
                     why)) {
    return false;
  }
  bool quantized = false, float_output = false, eltwise = false, channel_wise = false;
  if (!Bool(a, "quantized", false, &quantized, why) ||
      !Bool(a, "enable_float_output", false, &float_output, why) ||
      !Bool(a, "with_eltwise", false, &eltwise, why) ||
      !Bool(a, "channel_wise_quantize", false, &channel_wise, why)) {
    return false;
  }
  if (!quantized) {
    *why = "a float32 fully connected op (not quantized)";
    return false;
  }
  fc->float_output = float_output;
  if (!float_output) {
    bool calibrated = false;
    if (!CalibRange(a, &calibrated, &fc->min_calib, &fc->max_calib, why)) return false;
    if (!calibrated) {
      // MXNet fixes such an op's scales at its first forward (unless
      // MXNET_MKLDNN_QFC_DYNAMIC_PARAMS=1), whatever range later inputs have.
      *why =
          "an uncalibrated fully connected op (int32 output; MXNet keeps the input range of "
          "its first forward) is not run in regions";
      return false;
    }
  }
  fc->channel_wise = channel_wise;
  if (eltwise && float_output) {
    *why = "a fused eltwise with float output is not supported in regions yet";
    return false;
  }
  if (node->subgraphs.size() != 1) {
    *why = "the fused op has no subgraph";
    return false;
  }
  bool seen = false;
  for (size_t i = 0; i < node->subgraphs[0]->size(); ++i) {
    const Node* n = node->subgraphs[0]->getNode(i);
    if (n->op == "null") continue;
    if (n->op == "Activation" && eltwise && !fc->relu) {
      auto t = n->attrs.find("act_type");
      if (t == n->attrs.end() || Trim(t->second) != "relu") {
        *why = "fused activation " + (t == n->attrs.end() ? std::string("?") : t->second) +
               " of a fully connected op is not supported in regions yet";
        return false;
      }
      fc->relu = true;
      continue;
    }
    if (n->op != "FullyConnected" || seen) {
      *why = "fused op " + n->op + " is not supported in regions";
      return false;
    }
    seen = true;
    if (!OnlyKnownKeys(n->attrs, {"num_hidden", "no_bias", "flatten"}, why)) return false;
    int v = 0;
    auto nh = n->attrs.find("num_hidden");
    if (nh == n->attrs.end() || !ParseInteger(nh->second, &v) || v <= 0) {
      *why = "the fully connected op has no valid num_hidden";
      return false;
    }
    fc->num_hidden = v;
    if (!Bool(n->attrs, "no_bias", false, &fc->no_bias, why) ||
        !Bool(n->attrs, "flatten", true, &fc->flatten, why)) {
      return false;
    }
  }
  if (eltwise && !fc->relu) {
    *why = "with_eltwise without a fused ReLU is not supported in regions yet";
    return false;
  }
  if (!seen) {
    *why = "the fused op has no FullyConnected";
    return false;
  }
  return true;
}

bool ParseConcatBatchNormOp(const Node* node, BatchNormOpAttrs* bn, std::string* why) {
  ConcatBatchNormAttrs parsed;
  if (!ParseConcatBatchNormAttrs(node->attrs, &parsed, why, IsConcatAvgPoolBatchNormOp(node->op))) {
    return false;
  }
  if (parsed.bn.axis != 1 || parsed.dim != 1) {  // regions hold NCHW-ordered tensors
    *why = "BatchNorm over a concat along axis " + std::to_string(parsed.bn.axis) +
           " (regions need axis 1)";
    return false;
  }
  if (static_cast<int>(node->inputs.size()) != 3 * parsed.num_args + 4) {
    *why = "the op has " + std::to_string(node->inputs.size()) +
           " inputs for num_args=" + std::to_string(parsed.num_args);
    return false;
  }
  const FusedActivation& act = parsed.bn.act;
  if (act.kind == FusedActivation::Kind::kClip && act.a_min != 0 && !parsed.bn.has_calib_range) {
    *why = "clip with a_min != 0 without a calibrated range";
    return false;
  }
  bn->global_avg_pool = node->op == kQuantizedConcatBatchNormPoolOp ||
                        node->op == kQuantizedConcatAvgPoolBatchNormPoolOp;
  if (bn->global_avg_pool && IsCurve(act)) {
    *why = "global average pooling after a curve (the op refuses it)";
    return false;
  }
  bn->bn = parsed.bn;
  bn->num_concat = parsed.num_args;
  bn->avg_pool_in = parsed.avg_pool;
  bn->avg_pool = parsed.pool;
  return true;
}

bool ParseAvgPoolBatchNormOp(const Node* node, BatchNormOpAttrs* bn, std::string* why) {
  AvgPoolBatchNormAttrs parsed;
  if (!ParseAvgPoolBatchNormAttrs(node->attrs, &parsed, why)) return false;
  if (node->inputs.size() != 7) {
    *why = "the op has " + std::to_string(node->inputs.size()) + " inputs, not 7";
    return false;
  }
  const FusedActivation& act = parsed.bn.act;
  if (act.kind == FusedActivation::Kind::kClip && act.a_min != 0 && !parsed.bn.has_calib_range) {
    *why = "clip with a_min != 0 without a calibrated range";
    return false;
  }
  bn->global_avg_pool = node->op == kQuantizedAvgPoolBatchNormPoolOp;
  if (bn->global_avg_pool && IsCurve(act)) {
    *why = "global average pooling after a curve (the op refuses it)";
    return false;
  }
  bn->bn = parsed.bn;
  bn->avg_pool_in = true;
  bn->avg_pool = parsed.pool;
  return true;
}

bool ParseBatchNormOp(const Node* node, BatchNormOpAttrs* bn, std::string* why) {
  std::string error;
  const std::string& op = node->op;
  if (IsConcatBatchNormOp(op)) return ParseConcatBatchNormOp(node, bn, why);
  if (op == kQuantizedAvgPoolBatchNormOp || op == kQuantizedAvgPoolBatchNormPoolOp) {
    return ParseAvgPoolBatchNormOp(node, bn, why);
  }
  const bool act_op = op == kQuantizedBatchNormActOp || op == kBatchNormActQuantizeOp ||
                      op == kQuantizedBatchNormActPoolOp || op == kBatchNormActPoolQuantizeOp;
  if (!ParseBatchNormAttrs(node->attrs, &bn->bn, &error, act_op)) {
    *why = error;
    return false;
  }
  if (!act_op && op != kQuantizedBatchNormOp && op != kBatchNormQuantizeOp) {
    bn->bn.act.kind = FusedActivation::Kind::kRelu;  // the _relu ops
  }
  bn->global_avg_pool = op == kQuantizedBatchNormReluPoolOp || op == kQuantizedBatchNormActPoolOp ||
                        op == kBatchNormActPoolQuantizeOp;
  bn->float_input = op == kBatchNormQuantizeOp || op == kBatchNormReluQuantizeOp ||
                    op == kBatchNormActQuantizeOp || op == kBatchNormActPoolQuantizeOp;
  const FusedActivation& act = bn->bn.act;
  if (bn->global_avg_pool && IsCurve(act)) {
    *why = "global average pooling after a curve (the op refuses it)";
    return false;
  }
  if (act.kind == FusedActivation::Kind::kClip && act.a_min != 0 && !bn->bn.has_calib_range) {
    // Its bounds in output levels would follow a range measured at run time.
    *why = "clip with a_min != 0 without a calibrated range";
    return false;
  }
  if (bn->float_input && !bn->bn.has_calib_range) {
    *why = "float input BatchNorm without a calibrated range";
    return false;
  }
  if (bn->bn.axis != 1) {  // regions hold NCHW-ordered tensors
    *why = "BatchNorm axis " + std::to_string(bn->bn.axis) + " (regions need axis 1)";
    return false;
  }
  return true;
}

bool ParseQuantize(const Node* node, QuantizeAttrs* q, std::string* why) {
  const Attrs& a = node->attrs;
  if (!OnlyKnownKeys(a, {"out_type", "min_calib_range", "max_calib_range"}, why)) return false;
  auto type = a.find("out_type");
  if (type != a.end()) q->out_type = Trim(type->second);
  if (q->out_type != "int8" && q->out_type != "uint8" && q->out_type != "auto") {
    *why = "unknown out_type '" + q->out_type + "'";
    return false;
  }
  if (!CalibRange(a, &q->calibrated, &q->min_calib, &q->max_calib, why)) return false;
  if (q->calibrated && q->min_calib > q->max_calib) {
    *why = "min_calib_range > max_calib_range";
    return false;
  }
  return true;
}

bool ParseAdd(const Node* node, AddAttrs* add, std::string* why) {
  if (!OnlyKnownKeys(node->attrs, {"min_calib_range", "max_calib_range"}, why)) return false;
  return CalibRange(node->attrs, &add->calibrated, &add->min_calib, &add->max_calib, why);
}

bool ParseConcat(const Node* node, ConcatAttrs* concat, std::string* why) {
  if (!OnlyKnownKeys(node->attrs, {"num_args", "dim"}, why)) return false;
  auto n = node->attrs.find("num_args");
  if (n == node->attrs.end() || !ParseInteger(n->second, &concat->num_args) ||
      concat->num_args < 1) {
    *why = "the concat has no valid num_args";
    return false;
  }
  auto d = node->attrs.find("dim");
  if (d != node->attrs.end() && !ParseInteger(d->second, &concat->dim)) {
    *why = "cannot parse dim='" + d->second + "'";
    return false;
  }
  if (concat->dim < 1) {  // MXNet quantizes concat only along a dimension > 0
    *why = "concat along dimension " + std::to_string(concat->dim);
    return false;
  }
  if (static_cast<int>(node->inputs.size()) != 3 * concat->num_args) {
    *why = "the concat has " + std::to_string(node->inputs.size()) +
           " inputs for num_args=" + std::to_string(concat->num_args);
    return false;
  }
  return true;
}

}  // namespace

int ConvAttrs::num_inputs() const { return data_min_input() + 2 + (with_sum ? 2 : 0); }
int ConvAttrs::sum_input() const { return 2 + (no_bias ? 0 : 1) + (with_bn ? 4 : 0); }
int ConvAttrs::data_min_input() const { return sum_input() + (with_sum ? 1 : 0); }

bool ParseRegionNode(const Node* node, RegionNode* out, std::string* why) {
  why->clear();
  const std::string& op = node->op;
  if (op == "_sg_mkldnn_conv") {
    out->kind = OpKind::kConv;
    return ParseConv(node, &out->conv, why);
  }
  if (op == "_sg_mkldnn_fully_connected") {
    out->kind = OpKind::kFullyConnected;
    return ParseFullyConnected(node, &out->fc, why);
  }
  if (op == "_contrib_quantized_pooling") {
    out->kind = OpKind::kPooling;
    return ParsePooling(node, &out->pool, why);
  }
  if (op == kQuantizedAvgPoolingOp) {
    out->kind = OpKind::kPooling;
    out->pool_own_range = true;
    if (!OnlyKnownKeys(node->attrs,
                       {"kernel", "stride", "pad", "pool_type", "global_pool", "pooling_convention",
                        "count_include_pad", "layout", "cudnn_off", "p_value", "min_calib_range",
                        "max_calib_range"},
                       why) ||
        !CalibRange(node->attrs, &out->pool_range.calibrated, &out->pool_range.min,
                    &out->pool_range.max, why)) {
      return false;
    }
    Attrs avg = node->attrs;
    avg["pool_type"] = "avg";
    return ParsePoolingAttrs(avg, &out->pool, why);
  }
  if (op == "_contrib_quantized_act") {
    out->kind = OpKind::kRelu;
    auto t = node->attrs.find("act_type");
    if (t == node->attrs.end() || Trim(t->second) != "relu") {
      *why = "quantized activation other than relu";
      return false;
    }
    return OnlyKnownKeys(node->attrs, {"act_type"}, why);
  }
  if (op == "_contrib_quantized_flatten") {
    out->kind = OpKind::kFlatten;
    return OnlyKnownKeys(node->attrs, {}, why);
  }
  if (op == "_contrib_quantize_v2") {
    out->kind = OpKind::kQuantize;
    return ParseQuantize(node, &out->quantize, why);
  }
  if (op == "_contrib_requantize") {
    out->kind = OpKind::kRequantize;
    return ParseQuantize(node, &out->quantize, why);
  }
  if (op == "_contrib_dequantize") {
    out->kind = OpKind::kDequantize;
    return OnlyKnownKeys(node->attrs, {"out_type"}, why);
  }
  if (op == "_contrib_quantized_elemwise_add") {
    out->kind = OpKind::kAdd;
    return ParseAdd(node, &out->add, why);
  }
  if (op == "_contrib_quantized_concat") {
    out->kind = OpKind::kConcat;
    return ParseConcat(node, &out->concat, why);
  }
  if (IsPluginOp(op)) {
    out->kind = OpKind::kBatchNorm;
    return ParseBatchNormOp(node, &out->bn, why);
  }
  *why = "op " + op + " is not run in regions";
  return false;
}

}  // namespace region
}  // namespace bnq
