// The BNQ_QUANTIZE graph pass: runs on a symbol that MXNet's quantization flow
// produced (Symbol.optimize_for("BNQ_QUANTIZE", args, aux, **options)) and
// applies these rewrites, in this order:
//
//  QuantizeNeighbours: an fp32 Pooling (max, avg) or Flatten that MXNet's
//  smart mode left between a dequantize and a BatchNorm (directly or through
//  more such ops) becomes MXNet's own quantized op, so that the BatchNorm
//  gets quantized input:
//       dequantize -> Pooling -> BatchNorm
//         =>  quantized_pooling -> dequantize -> BatchNorm  (then below)
//     Only where the input dequantize goes away: never more dequantize
//     nodes than before.  Not Concat (QuantizedTwin says why), nor an average
//     pooling whose BatchNorm the float-input rewrite takes (BetterLeftFloat).
//
//  In each rewrite "[-> act]" is an optional fp32 activation the plugin's ops
//  fuse (FusableActivation: ReLU, clip / ReLU6, leaky ReLU, and the curves
//  sigmoid, tanh, softrelu, gelu); with a ReLU the result is the _relu op,
//  with another activation the _act op.
//
//  PoolBeforeQuantizedConcat: MXNet's int8 max pooling of its int8 concat
//  pools each part first (the same bits), so that BatchNorms after it read
//  the parts:
//       quantized_concat -> quantized_pooling(max)
//         =>  quantized_pooling(max).. -> quantized_concat
//
//  PoolConcatParts: an fp32 max Pooling of an fp32 Concat of dequantized
//  tensors pools each part in int8 instead (exact), so that the BatchNorm
//  after it reads the parts (below):
//       dequantize.. -> Concat -> Pooling(max)
//         =>  quantized_pooling.. -> dequantize.. -> Concat
//     through MXNet's quantized concats to their parts (each then pooled in
//     its own range).  Only where the concat and its dequantizes have no
//     other reader.
//
//  QuantizeAfterFloatConcat: a BatchNorm left fp32 after an fp32 Concat of
//  dequantized tensors (smart mode leaves such a concat fp32), that feeds a
//  quantize:
//       dequantize.. -> Concat -> BatchNorm [-> act] -> quantize_v2
//         =>  quantized_concat_batch_norm reading the quantized parts
//     each in its own range (below); the Concat stays for other readers.
//
//  QuantizeBetweenDequantizeAndQuantize: a BatchNorm left fp32 between a
//  dequantize and a quantize becomes one quantized op:
//       dequantize -> BatchNorm [-> act] -> quantize_v2
//         =>   quantized_batch_norm (_relu, _act)
//  QuantizeFloatInputBatchNorm: a BatchNorm on an fp32 tensor (e.g. the
//  network input) that feeds only a quantize:
//       x -> BatchNorm [-> act] -> quantize_v2
//         =>  x -> batch_norm_quantize (_relu, _act)
//     with the quantize's calibrated range; without one (calib_mode none),
//         =>  x -> quantize_v2 -> quantized_batch_norm (ranges found at run time)
//  QuantizeBeforeFloatOps: a BatchNorm left fp32 after a dequantize whose
//  output only fp32 ops read (the network's fp32 tail):
//       dequantize -> BatchNorm [-> act] -> fp32 ops
//         =>  quantized_batch_norm (_relu, _act) -> dequantize -> fp32 ops
//     its range from relu_calib_ranges (by the act's, else the BatchNorm's
//     name), else marked missing (__bnq_missing_relu_range__) and derived;
//     after an fp32 Concat of dequantized parts, the concat BatchNorm op
//  QuantizeConcatMeanHead: a head left fp32 after an fp32 Concat of
//  dequantized tensors (through a max or average Pooling or not) reads the
//  parts:
//       dequantize.. -> Concat [-> max Pooling] -> BatchNorm -> act -> mean
//         -> quantize_v2  =>  [quantized_pooling..] ->
//         quantized_concat_batch_norm_global_avg_pool [-> quantized_flatten]
//     (quantized_concat_avg_pool_batch_norm_global_avg_pool after an
//     average Pooling: the op pools each part)
//  QuantizeFloatInputMeanHead: a head left fp32 on fp32 data (e.g. after an
//  fp32 pooling of an fp32 Concat): BatchNorm, a linear activation, a mean
//  over H and W, as QuantizeFloatInputBatchNorm does without the mean:
//       x -> BatchNorm -> act -> mean(axis=(2, 3)) -> quantize_v2
//         =>  x -> batch_norm_act_global_avg_pool_quantize [-> quantized_flatten]
//     (the mean of the exact values); without a calibrated range,
//         =>  x -> quantize_v2 -> quantized_batch_norm_act_global_avg_pool
//  FuseDequantizedActivation: a quantized BatchNorm whose activation MXNet
//  left fp32 (it quantizes only the ReLU):
//       quantized_batch_norm -> dequantize -> act -> quantize_v2
//         =>  quantized_batch_norm_relu / _act, with the quantize's range
//     and a head's linear activation (quantize_mode='full' leaves it so):
//       quantized_batch_norm -> dequantize -> act -> mean -> quantize_v2
//         =>  quantized_batch_norm_act -> dequantize -> mean -> quantize_v2
//     (FuseMeanHead below makes that the pooled op)
//  FuseBatchNormRelu: a quantized BatchNorm and the quantized ReLU after it:
//       quantized_batch_norm -> quantized_act(relu)  =>  quantized_batch_norm_relu (uint8)
//  FuseGlobalAvgPooling: a quantized BatchNorm+ReLU (or +act) and the global
//  average pooling after it (the head of a pre-activation ResNet):
//       quantized_batch_norm_relu -> quantized_pooling(avg, global)
//         =>  quantized_batch_norm_relu_global_avg_pool (_act_global_avg_pool)
//     with the pooled output's range from relu_calib_ranges (by the pooling's
//     name), else marked missing.  MXNet's int8 pooling rounds twice, and runs
//     a reference kernel (about 25x slower) on the layout a library op writes.
//     Not after a curve: the op averages in levels, which a curve forbids.
//  FuseMeanHead: the same for a mean over H and W in fp32 (a head written
//  with F.mean, or a global average Pooling smart mode left fp32), as
//  QuantizeBeforeFloatOps leaves it:
//       quantized_batch_norm_relu (_act) -> dequantize -> mean(axis=(2, 3))
//         -> quantize_v2  =>  the pooled op [-> quantized_flatten], with the
//     quantize's range.
//  FuseQuantizedConcat: a quantized BatchNorm (_relu, _act) after MXNet's
//  quantized concat:
//       quantized_concat -> quantized_batch_norm (_relu, _act)
//         =>  quantized_concat_batch_norm
//     reading the concat's parts (through nested concats: a dense block's
//     chain) each in its own range.  MXNet's int8 concat rescales every part
//     to the largest range first, and the BatchNorm then amplifies the coarse
//     steps of the channels from small ranges (densenet121 lost 4.7 dB).
//  FuseAvgPoolingIntoBatchNorm: a quantized BatchNorm (_relu, _act) reading
//  an int8 average pooling, or the float-input one reading an fp32 average
//  pooling of a dequantize, reads the pooling's quantized input instead:
//       quantized avg pooling -> quantized_batch_norm (_relu, _act)
//       dequantize -> Pooling(avg) -> batch_norm_quantize (_relu, _act)
//         =>  quantized_avg_pool_batch_norm
//     the BatchNorm of the exact mean, rounded once (not the mean rounded
//     again, nor a round trip to fp32); the pooling stays for other readers.
//     A head there (_global_avg_pool: BatchNorm + act + mean) becomes
//     quantized_avg_pool_batch_norm_global_avg_pool: the mean of the BN+act
//     values of the exact window means, in the head's pooled range.
//     A pooling of a concat (MXNet's quantized one, or an fp32 Concat of
//     dequantizes) gives its parts instead, each pooled in its own range:
//         =>  quantized_concat_avg_pool_batch_norm (_global_avg_pool)
//  RequantizeAveragePooling: MXNet's quantized average pooling becomes the
//  plugin's, which writes the mean in the range calibrated on the pooled
//  output (relu_calib_ranges by the pooling's name, else marked missing):
//  MXNet's rounds it again at the input's step, and a mean's range is
//  smaller (densenet121's transitions).
//  AvoidUint8ForSignedInput: a uint8 quantize or requantize whose input may
//  be negative (no calibrated range, or a negative one) emits int8.  With
//  quantized_dtype='uint8' MXNet emits them even for signed data: its
//  convolution then refuses the input, or a requantize clips every negative
//  value to 0.
//  MarkPluginNodes: the plugin attribute on every plugin op (below).
//  HintParameterShapes: the shapes of the BatchNorm parameters on their
//  variables ("__shape__"), from the arrays handed to the pass.  MXNet 1.9.1's
//  library-op shape inference overflows a heap buffer when some input shapes
//  are unknown, as they are in simple_bind/Module.bind with only the data
//  shape given; with these hints they are always known.
//  ForgetInferredShapes: MXNet's inferred shapes and types, which the
//  flow has it infer (with the data shapes) so that the rewrites know a
//  tensor's rank, are dropped from the result: they describe the input.
//
// Every rewritten node gets a hidden "__bnq_rewrite__" attribute naming the
// rewrite, for reports, and every quantized BatchNorm a "__bnq_plugin__"
// attribute: the model needs the plugin's numerics (tools check it before
// running the model without the plugin, where MXNet's own op would run).
// Replaced nodes are detached (no inputs, no uses); MXNet drops them when it
// loads the pass's result.
#include <algorithm>
#include <string>
#include <unordered_map>
#include <vector>

#include "batch_norm_attrs.h"
#include "error_reporting.h"
#include "graph_edit.h"
#include "mxnet/lib_api.h"
#include "number_parsing.h"
#include "op_names.h"
#include "pass_options.h"
#include "pooling_attrs.h"

namespace bnq {
namespace {

constexpr char kBatchNorm[] = "BatchNorm";
constexpr char kQuantize[] = "_contrib_quantize_v2";
constexpr char kDequantize[] = "_contrib_dequantize";
constexpr char kRequantize[] = "_contrib_requantize";
constexpr char kQuantizedAct[] = "_contrib_quantized_act";
constexpr char kQuantizedPooling[] = "_contrib_quantized_pooling";
constexpr char kQuantizedFlatten[] = "_contrib_quantized_flatten";

std::string Attr(const Node* node, const std::string& key, const std::string& fallback = "") {
  auto it = node->attrs.find(key);
  return it == node->attrs.end() ? fallback : it->second;
}

// Appends `rewrite` to the node's list of rewrites ("a+b").
void NoteRewrite(Node* node, const std::string& rewrite) {
  const std::string before = Attr(node, kRewriteAttr);
  node->attrs[kRewriteAttr] = before.empty() ? rewrite : before + "+" + rewrite;
}

// Gives every use of the quantized outputs (data, min, max) of `from` to
// those of `to`, and detaches `from`.
void TakeOverOutputs(Graph* graph, Node* from, Node* to) {
  for (int i = 0; i < 3; ++i) RedirectUses(graph, from, i, to, i);
  DetachNode(from);
}

bool IsExcluded(const PassOptions& options, const Node* node) {
  return options.excluded_sym_names.count(node->name) > 0 ||
         options.excluded_op_names.count(node->op) > 0;
}

// The single consumer of output 0 of `node` if it is the only use of any of
// the node's outputs, else nullptr.
Node* SoleConsumer(const Graph* graph, const Node* node, int num_outputs) {
  if (UseCount(graph, node, 0) != 1 || IsGraphOutput(graph, node, 0)) return nullptr;
  for (int i = 1; i < num_outputs; ++i) {
    if (UseCount(graph, node, i) != 0) return nullptr;
  }
  return ConsumersOf(node, 0)[0].node;
}

// The fp32 activation `node` as the _act ops' attributes (act_type "relu" for
// a ReLU); false if the plugin's ops cannot fuse it.  Activation's act_type
// and the operators of the same name are the same function.
bool FusableActivation(const Node* node, std::unordered_map<std::string, std::string>* act) {
  act->clear();
  const std::string op = node->op;
  const std::string act_type = Attr(node, "act_type");
  if (op == "Activation" && (act_type == "relu" || act_type == "sigmoid" || act_type == "tanh" ||
                             act_type == "softrelu")) {
    (*act)["act_type"] = act_type;
  } else if (op == "relu" || op == "sigmoid" || op == "tanh") {
    (*act)["act_type"] = op;
  } else if (op == "clip" && !Attr(node, "a_min").empty() && !Attr(node, "a_max").empty()) {
    *act = {{"act_type", "clip"}, {"a_min", Attr(node, "a_min")}, {"a_max", Attr(node, "a_max")}};
  } else if (op == "LeakyReLU" && Attr(node, "act_type", "leaky") == "leaky") {
    *act = {{"act_type", "leaky"}, {"slope", Attr(node, "slope", "0.25")}};
  } else if (op == "LeakyReLU" && act_type == "gelu") {
    (*act)["act_type"] = "gelu";
  }
  return !act->empty();
}

// The act_type names a curve (the pooled ops cannot take it).
bool IsCurveType(const std::string& act_type) {
  FusedActivation act;
  act.kind = ActivationKind(act_type);
  return IsCurve(act);
}

// The plugin op's activation is a curve.
bool HasCurve(const Node* bn) { return IsCurveType(Attr(bn, "act_type")); }

bool IsFusableActivation(const Node* node) {
  std::unordered_map<std::string, std::string> act;
  return FusableActivation(node, &act);
}

bool IsRelu(const std::unordered_map<std::string, std::string>& act) {
  return act.at("act_type") == "relu";
}

// The op names of a rewrite: without activation, with ReLU, with another one.
struct FusedOps {
  const char* plain;
  const char* relu;
  const char* act;
};
constexpr FusedOps kQuantizedOps{kQuantizedBatchNormOp, kQuantizedBatchNormReluOp,
                                 kQuantizedBatchNormActOp};
constexpr FusedOps kFloatInputOps{kBatchNormQuantizeOp, kBatchNormReluQuantizeOp,
                                  kBatchNormActQuantizeOp};

// Makes `bn` the op of `ops` for the activation `act_node` (nullptr: none),
// copying an activation's attributes.
void BecomeFused(Node* bn, const Node* act_node, const FusedOps& ops) {
  std::unordered_map<std::string, std::string> act;
  if (act_node == nullptr || !FusableActivation(act_node, &act)) {
    bn->op = ops.plain;
    return;
  }
  bn->op = IsRelu(act) ? ops.relu : ops.act;
  if (!IsRelu(act)) {
    for (const auto& kv : act) bn->attrs[kv.first] = kv.second;
  }
  NoteRewrite(bn, IsRelu(act) ? "fused_relu" : "fused_" + act.at("act_type"));
  bn->attrs[kFusedActivationAttr] = act_node->name;
}

// An fp32 BatchNorm whose only use is a quantize_v2, possibly through an fp32
// activation that the ops fuse and that has no other use; returns that
// quantize and sets `act`.
Node* QuantizeAfterFp32BatchNorm(const Graph* graph, const PassOptions& options, Node* bn,
                                 Node** act) {
  *act = nullptr;
  if (bn->op != kBatchNorm || IsExcluded(options, bn) || bn->inputs.size() != 5) return nullptr;
  bool mean_var = false;
  if (!ParseBool(Attr(bn, "output_mean_var", "false"), &mean_var) || mean_var) return nullptr;
  Node* next = SoleConsumer(graph, bn, 3);
  if (next != nullptr && IsFusableActivation(next) && !IsExcluded(options, next)) {
    *act = next;
    next = SoleConsumer(graph, next, 1);
  }
  return next != nullptr && next->op == kQuantize ? next : nullptr;
}

// Both ends of the calibrated range are numbers (unset ones may read "None").
bool HasCalibratedRange(const Node* quantize) {
  double lo = 0, hi = 0;
  return ParseDecimal(Attr(quantize, "min_calib_range"), &lo) &&
         ParseDecimal(Attr(quantize, "max_calib_range"), &hi);
}

// Gives `bn` the calibrated range of `quantize` (none if it has none).
void TakeRange(Node* bn, const Node* quantize) {
  for (const char* key : {"min_calib_range", "max_calib_range"}) {
    const std::string value = Attr(quantize, key);
    if (value.empty()) {
      bn->attrs.erase(key);
    } else {
      bn->attrs[key] = value;
    }
  }
}

// Makes fp32 `bn` (and the fp32 activation `act` after it, if any) the op of
// `ops` with the range of `quantize`, and gives it the uses of `quantize`.
void TakeOverQuantize(Graph* graph, Node* bn, Node* act, Node* quantize, const FusedOps& ops,
                      const char* rewrite) {
  // The quantize after an activation was calibrated on its output, as the fused op needs.
  NoteRewrite(bn, rewrite);
  BecomeFused(bn, act, ops);
  TakeRange(bn, quantize);
  TakeOverOutputs(graph, quantize, bn);
  if (act != nullptr) DetachNode(act);
}

// Turns fp32 `bn` (and `relu`) into a quantized BatchNorm reading (data, min,
// max), taking over the uses of `quantize`.
void QuantizeBatchNorm(Graph* graph, Node* bn, Node* act, const NodeEntry data, const NodeEntry min,
                       const NodeEntry max, Node* quantize, const char* rewrite) {
  SetInput(bn, 0, data.node, data.entry);
  SetInput(bn, 5, min.node, min.entry);
  SetInput(bn, 6, max.node, max.entry);
  TakeOverQuantize(graph, bn, act, quantize, kQuantizedOps, rewrite);
}

// One input of a concatenation, quantized: its data and range ends.
struct QuantizedPart {
  NodeEntry data, min, max;
};

constexpr char kConcat[] = "Concat";
constexpr char kQuantizedConcat[] = "_contrib_quantized_concat";

// A concatenation along the channel axis 1 of NCHW-like data (MXNet's fp32
// Concat or its quantized twin, by `op`), with its number of inputs.
bool IsChannelConcat(const Node* node, const char* op, int* num_args) {
  if (node->op != op || Attr(node, "dim", "1") != "1") return false;
  return ParseInteger(Attr(node, "num_args"), num_args) && *num_args >= 1 &&
         static_cast<int>(node->inputs.size()) == (op == kConcat ? 1 : 3) * *num_args;
}

// The quantized parts of output 0 of MXNet's quantized concat `concat`, in
// channel order, expanding the parts that are themselves such concats (a
// dense block's chain): the BatchNorm then reads every part in its own range.
void QuantizedConcatParts(const Node* concat, std::vector<QuantizedPart>* parts, int depth = 0) {
  int n = 0;
  IsChannelConcat(concat, kQuantizedConcat, &n);
  for (int i = 0; i < n; ++i) {
    const QuantizedPart part{concat->inputs[i], concat->inputs[n + 2 * i],
                             concat->inputs[n + 2 * i + 1]};
    const Node* inner = part.data.node;
    int unused = 0;
    if (depth < 64 && part.data.entry == 0 && IsChannelConcat(inner, kQuantizedConcat, &unused) &&
        part.min.node == inner && part.min.entry == 1 && part.max.node == inner &&
        part.max.entry == 2) {
      QuantizedConcatParts(inner, parts, depth + 1);
    } else {
      parts->push_back(part);
    }
  }
}

// The quantized parts that the dequantize `dequantize` reads: its input,
// or through MXNet's quantized concat (which rescales them to the widest
// range, a rounding of the others) that concat's parts.
void PartsOfDequantize(const Node* dequantize, std::vector<QuantizedPart>* parts) {
  const std::vector<NodeEntry>& q = dequantize->inputs;
  int unused = 0;
  if (q[0].entry == 0 && IsChannelConcat(q[0].node, kQuantizedConcat, &unused) &&
      q[1].node == q[0].node && q[1].entry == 1 && q[2].node == q[0].node && q[2].entry == 2) {
    QuantizedConcatParts(q[0].node, parts);
  } else {
    parts->push_back({q[0], q[1], q[2]});
  }
}

// The quantized parts of the fp32 Concat `concat` whose every input is a
// dequantize (or such a Concat): false if one is not.
bool DequantizedConcatParts(const Node* concat, std::vector<QuantizedPart>* parts, int depth = 0) {
  int n = 0;
  if (depth > 64 || !IsChannelConcat(concat, kConcat, &n)) return false;
  for (int i = 0; i < n; ++i) {
    const Node* in = concat->inputs[i].node;
    if (concat->inputs[i].entry != 0) return false;
    if (in->op == kDequantize && in->inputs.size() == 3) {
      PartsOfDequantize(in, parts);
    } else if (!DequantizedConcatParts(in, parts, depth + 1)) {
      return false;
    }
  }
  return true;
}

// Detaches `node` if nothing uses it any more, then the concats and
// dequantizes that only it read.
void DetachIfUnused(const Graph* graph, Node* node) {
  for (int i = 0; i < 3; ++i) {
    if (UseCount(graph, node, i) != 0) return;
  }
  std::vector<Node*> inputs;
  for (const NodeEntry& e : node->inputs) inputs.push_back(e.node);
  DetachNode(node);
  for (Node* in : inputs) {
    if (in->op == kQuantizedConcat || in->op == kConcat || in->op == kDequantize) {
      DetachIfUnused(graph, in);
    }
  }
}

// The quantized head ops: BatchNorm + ReLU or act + global average pooling.
bool IsQuantizedHead(const Node* bn) {
  return bn->op == kQuantizedBatchNormReluPoolOp || bn->op == kQuantizedBatchNormActPoolOp;
}

// Makes `bn` the concat BatchNorm op reading `parts` (its parameters stay):
// data_0..n-1, gamma, beta, moving_mean, moving_var, min_0, max_0, ...
void BecomeConcatBatchNorm(Node* bn, const std::vector<QuantizedPart>& parts) {
  const std::vector<NodeEntry> params(bn->inputs.begin() + 1, bn->inputs.begin() + 5);
  DetachNode(bn);
  for (const QuantizedPart& p : parts) SetInput(bn, bn->inputs.size(), p.data.node, p.data.entry);
  for (const NodeEntry& p : params) SetInput(bn, bn->inputs.size(), p.node, p.entry);
  for (const QuantizedPart& p : parts) {
    SetInput(bn, bn->inputs.size(), p.min.node, p.min.entry);
    SetInput(bn, bn->inputs.size(), p.max.node, p.max.entry);
  }
  const bool pooled = IsQuantizedHead(bn);
  if (bn->op == kQuantizedBatchNormReluOp || bn->op == kQuantizedBatchNormReluPoolOp) {
    bn->attrs["act_type"] = "relu";
  }
  bn->op = pooled ? kQuantizedConcatBatchNormPoolOp : kQuantizedConcatBatchNormOp;
  bn->attrs["num_args"] = std::to_string(parts.size());
  bn->attrs["dim"] = "1";
  NoteRewrite(bn, "concat_batch_norm");
}

// A plugin BatchNorm over the channels (axis 1) that can read a concat's
// parts instead (the quantized ones, pooled or not).
bool ReadsConcatParts(const Node* bn) {
  return (bn->op == kQuantizedBatchNormOp || bn->op == kQuantizedBatchNormReluOp ||
          bn->op == kQuantizedBatchNormActOp || IsQuantizedHead(bn)) &&
         Attr(bn, "axis", "1") == "1";
}

// dequantize -> BatchNorm [-> ReLU] -> quantize_v2  =>  one quantized op.
void QuantizeBetweenDequantizeAndQuantize(Graph* graph, const PassOptions& options) {
  for (Node* bn : NodesInOrder(graph)) {
    Node* act = nullptr;
    Node* quantize = QuantizeAfterFp32BatchNorm(graph, options, bn, &act);
    if (quantize == nullptr) continue;
    Node* dequantize = bn->inputs[0].node;
    if (dequantize->op != kDequantize || bn->inputs[0].entry != 0) continue;
    const std::vector<NodeEntry> q = dequantize->inputs;  // copy: data, min, max
    QuantizeBatchNorm(graph, bn, act, q[0], q[1], q[2], quantize, "quantized_fp32_bn");
    // A dequantize that other fp32 ops read stays for them.
    if (UseCount(graph, dequantize, 0) == 0) DetachNode(dequantize);
  }
}

std::string FloatString(float v) {
  char buf[32];
  snprintf(buf, sizeof(buf), "%.9g", v);
  return buf;
}

// A quantize_v2 of the fp32 data of `bn` that finds its range at run time
// (not yet read by `bn`).  uint8 cannot hold a negative input, and the
// input's sign is known only at run time: 'auto' then.
Node* RunTimeInputQuantize(Graph* graph, const PassOptions& options, const Node* bn) {
  Node* input_quantize = graph->addNode(bn->name + "_data_quantize", kQuantize);
  input_quantize->attrs["out_type"] =
      options.quantized_dtype == "uint8" ? "auto" : options.quantized_dtype;
  const NodeEntry data = bn->inputs[0];
  SetInput(input_quantize, 0, data.node, data.entry);
  return input_quantize;
}

// x (fp32) -> BatchNorm [-> ReLU] -> quantize_v2  =>  one op from fp32 to int8/uint8.
void QuantizeFloatInputBatchNorm(Graph* graph, const PassOptions& options) {
  for (Node* bn : NodesInOrder(graph)) {
    Node* act = nullptr;
    Node* quantize = QuantizeAfterFp32BatchNorm(graph, options, bn, &act);
    if (quantize == nullptr || bn->inputs[0].node->op == kDequantize) continue;
    if (HasCalibratedRange(quantize)) {
      // One op from fp32 data to the quantized output: exact, and one pass.
      TakeOverQuantize(graph, bn, act, quantize, kFloatInputOps, "quantized_fp32_input_bn");
    } else {
      // No range to quantize to: quantize the input at run time and derive
      // the output range from it.
      Node* input_quantize = RunTimeInputQuantize(graph, options, bn);
      QuantizeBatchNorm(graph, bn, act, {input_quantize, 0}, {input_quantize, 1},
                        {input_quantize, 2}, quantize, "quantized_fp32_input_bn");
    }
  }
}

// MXNet's quantized op for an fp32 Pooling or Flatten it can run (the forms
// its quantize pass makes), else nullptr.
// Not Concat: MXNet's quantized concat rescales every input to the largest
// range, and the BatchNorm after it then amplifies the coarse steps of the
// channels that came from a small range (a dense-style random net lost 7 dB
// of logit SQNR against the concat left fp32).
const char* QuantizedTwin(const Node* node) {
  if (node->op == "Flatten" || node->op == "flatten") return kQuantizedFlatten;
  if (node->op != "Pooling") return nullptr;
  const std::string type = Attr(node, "pool_type", "max");
  const std::string layout = Attr(node, "layout", "None");
  const std::string kernel = Attr(node, "kernel", "()");
  bool global = false;
  const bool planar = std::count(kernel.begin(), kernel.end(), ',') == 1 ||
                      (ParseBool(Attr(node, "global_pool", "false"), &global) && global);
  return (type == "max" || type == "avg") && (layout == "None" || layout == "NCHW") && planar
             ? kQuantizedPooling
             : nullptr;
}

// True if output 0 of `node` feeds a BatchNorm, directly or through ops with
// a quantized twin.
bool LeadsToBatchNorm(const Node* node, int depth = 0) {
  if (depth > 16) return false;
  for (const NodeEntry& use : ConsumersOf(node, 0)) {
    const Node* next = use.node;
    if (next->op == kBatchNorm ||
        (QuantizedTwin(next) != nullptr && LeadsToBatchNorm(next, depth + 1))) {
      return true;
    }
  }
  return false;
}

// An average pooling whose BatchNorms the float-input op quantizes in a
// calibrated range (QuantizeFloatInputBatchNorm): left fp32, they read the
// unrounded mean.  MXNet's int8 average pooling rounds the mean again, in its
// input's range, and a BatchNorm amplifies that second rounding (a random
// LeakyReLU net lost 1.3 dB of logit SQNR); FuseAvgPoolingIntoBatchNorm then
// gives such a BatchNorm the pooling's int8 input.  Max pooling and Flatten
// commute with quantization: their int8 forms are exact.
bool BetterLeftFloat(const Graph* graph, const PassOptions& options, const Node* node) {
  if (node->op != "Pooling" || Attr(node, "pool_type", "max") != "avg") return false;
  bool any = false;
  for (const NodeEntry& use : ConsumersOf(node, 0)) {
    if (use.node->op != kBatchNorm) continue;  // e.g. a shortcut's quantize
    Node* act = nullptr;
    const Node* quantize = QuantizeAfterFp32BatchNorm(graph, options, use.node, &act);
    if (quantize == nullptr || !HasCalibratedRange(quantize)) return false;
    any = true;
  }
  return any;
}

// MXNet's int8 pooling with the attributes of `pool`, of concatenated part
// `i` (its quantized data, min, max).
Node* PoolingOfPart(Graph* graph, const Node* pool, size_t i, const QuantizedPart& part) {
  Node* node = graph->addNode(pool->name + "_part" + std::to_string(i), kQuantizedPooling);
  node->attrs = pool->attrs;
  node->attrs.erase(kRewriteAttr);
  NoteRewrite(node, "pooled_concat_part");
  SetInput(node, 0, part.data.node, part.data.entry);
  SetInput(node, 1, part.min.node, part.min.entry);
  SetInput(node, 2, part.max.node, part.max.entry);
  return node;
}

// dequantize.. -> Concat -> max Pooling (-> BatchNorm ...)
//   =>  quantized_pooling.. -> dequantize.. -> Concat (-> BatchNorm ...)
// Max pooling commutes with the concat (it pools each channel) and with
// quantization (exact in int8): each part is pooled in int8, and the
// BatchNorm after the concat then reads the quantized parts (the concat
// BatchNorm op).  Only where the concat and its dequantizes have no other
// reader: never more dequantize nodes.
// The rewrite of PoolConcatParts for one fp32 max `pool`, if it reads such a
// concat; false (and no change) if not.
bool PoolEachConcatPart(Graph* graph, const PassOptions& options, Node* pool) {
  if (QuantizedTwin(pool) != kQuantizedPooling || Attr(pool, "pool_type", "max") != "max" ||
      IsExcluded(options, pool) || pool->inputs.size() != 1 || pool->inputs[0].entry != 0) {
    return false;
  }
  Node* concat = pool->inputs[0].node;
  int n = 0;
  if (!IsChannelConcat(concat, kConcat, &n) || IsExcluded(options, concat) ||
      UseCount(graph, concat, 0) != 1) {
    return false;
  }
  for (const NodeEntry& e : concat->inputs) {
    if (e.node->op != kDequantize || e.entry != 0 || UseCount(graph, e.node, 0) != 1) return false;
  }
  // The parts to pool, so that the BatchNorm reads every part in its own range.
  std::vector<QuantizedPart> parts;
  std::vector<Node*> dequantizes;
  for (const NodeEntry& e : concat->inputs) {
    dequantizes.push_back(e.node);
    PartsOfDequantize(e.node, &parts);
  }
  const std::unordered_map<std::string, std::string> dequantize_attrs = dequantizes[0]->attrs;
  DetachNode(concat);
  for (size_t i = 0; i < parts.size(); ++i) {
    Node* part = PoolingOfPart(graph, pool, i, parts[i]);
    Node* dequantize = graph->addNode(part->name + "_dequantize", kDequantize);
    dequantize->attrs = dequantize_attrs;
    for (int k = 0; k < 3; ++k) SetInput(dequantize, k, part, k);
    SetInput(concat, i, dequantize, 0);
  }
  concat->attrs["num_args"] = std::to_string(parts.size());
  for (Node* dequantize : dequantizes) DetachIfUnused(graph, dequantize);
  RedirectUses(graph, pool, 0, concat, 0);
  DetachNode(pool);
  return true;
}

// quantized_concat -> quantized_pooling(max)
//   =>  quantized_pooling(max).. -> quantized_concat
// Max pooling works on each channel alone and commutes with the concat's
// rescaling (a monotone rounding): the same bits for every reader, and the
// BatchNorms after it then read the parts, each in its own range
// (FuseQuantizedConcat, the concat's dequantize read through).  Only where
// the pooling is the concat's one reader.
void PoolBeforeQuantizedConcat(Graph* graph, const PassOptions& options) {
  for (Node* pool : NodesInOrder(graph)) {
    if (pool->op != kQuantizedPooling || Attr(pool, "pool_type", "max") != "max" ||
        IsExcluded(options, pool) || pool->inputs.size() != 3) {
      continue;
    }
    Node* concat = pool->inputs[0].node;
    int n = 0;
    if (!IsChannelConcat(concat, kQuantizedConcat, &n) || IsExcluded(options, concat)) continue;
    bool sole_reader = true;
    for (int k = 0; k < 3; ++k) {
      sole_reader = sole_reader && pool->inputs[k].node == concat && pool->inputs[k].entry == k &&
                    UseCount(graph, concat, k) == 1;
    }
    if (!sole_reader) continue;
    const std::vector<NodeEntry> in = concat->inputs;  // copy: data.., then (min, max) pairs
    for (int i = 0; i < n; ++i) {
      Node* part = PoolingOfPart(graph, pool, i, {in[i], in[n + 2 * i], in[n + 2 * i + 1]});
      SetInput(concat, i, part, 0);
      SetInput(concat, n + 2 * i, part, 1);
      SetInput(concat, n + 2 * i + 1, part, 2);
    }
    DetachNode(pool);
    for (int k = 0; k < 3; ++k) RedirectUses(graph, pool, k, concat, k);
    NoteRewrite(concat, "pooled_parts");
  }
}

void PoolConcatParts(Graph* graph, const PassOptions& options) {
  for (Node* pool : NodesInOrder(graph)) {
    if (LeadsToBatchNorm(pool)) PoolEachConcatPart(graph, options, pool);
  }
}

void QuantizeNeighbours(Graph* graph, const PassOptions& options) {
  for (Node* node : NodesInOrder(graph)) {
    const char* twin = QuantizedTwin(node);
    if (twin == nullptr || IsExcluded(options, node) || node->inputs.size() != 1 ||
        BetterLeftFloat(graph, options, node)) {
      continue;
    }
    // Only where the dequantize goes away: never more dequantize nodes.
    Node* dequantize = node->inputs[0].node;
    if (dequantize->op != kDequantize || node->inputs[0].entry != 0 ||
        UseCount(graph, dequantize, 0) != 1 || !LeadsToBatchNorm(node)) {
      continue;
    }
    const std::vector<NodeEntry> q = dequantize->inputs;  // copy: data, min, max
    Node* after = graph->addNode(node->name + "_dequantize", kDequantize);
    RedirectUses(graph, node, 0, after, 0);  // before `after` reads node
    for (int i = 0; i < 3; ++i) SetInput(node, i, q[i].node, q[i].entry);
    DetachNode(dequantize);
    node->op = twin;
    NoteRewrite(node, "quantized_neighbour");
    for (int i = 0; i < 3; ++i) SetInput(after, i, node, i);
  }
}

// Sets the calibrated range of `bn` from options.relu_calib_ranges[key], or
// marks it as missing the range of `key` (the op then derives one).
void RangeFromOptions(const PassOptions& options, const std::string& key, Node* bn) {
  auto range = options.relu_calib_ranges.find(key);
  if (range != options.relu_calib_ranges.end()) {
    bn->attrs["min_calib_range"] = FloatString(range->second.first);
    bn->attrs["max_calib_range"] = FloatString(range->second.second);
  } else {
    // Marked with the node whose output range is missing, so that a flow
    // knows which layer outputs to calibrate.
    bn->attrs[kMissingReluRangeAttr] = key;
  }
}

// dequantize -> BatchNorm [-> act] -> fp32 ops (not a quantize: the network's
// fp32 tail, e.g. a mean before the classifier)
//   =>  quantized_batch_norm (_relu, _act) -> dequantize -> fp32 ops
// The dequantize moves after the BatchNorm; its range is the act's (or the
// BatchNorm's) output range, collected in the calibration run.
void QuantizeBeforeFloatOps(Graph* graph, const PassOptions& options) {
  for (Node* bn : NodesInOrder(graph)) {
    if (bn->op != kBatchNorm || IsExcluded(options, bn) || bn->inputs.size() != 5) continue;
    bool mean_var = false;
    if (!ParseBool(Attr(bn, "output_mean_var", "false"), &mean_var) || mean_var) continue;
    Node* dequantize = bn->inputs[0].node;
    if (bn->inputs[0].entry != 0 || UseCount(graph, bn, 1) != 0 || UseCount(graph, bn, 2) != 0) {
      continue;
    }
    // Or an fp32 Concat of dequantized parts (its other readers keep it).
    std::vector<QuantizedPart> parts;
    if (dequantize->op == kConcat) {
      if (IsExcluded(options, dequantize) || Attr(bn, "axis", "1") != "1" ||
          !DequantizedConcatParts(dequantize, &parts)) {
        continue;
      }
    } else if (dequantize->op != kDequantize || UseCount(graph, dequantize, 0) != 1) {
      continue;
    }
    Node* act = SoleConsumer(graph, bn, 3);
    if (act != nullptr && (!IsFusableActivation(act) || IsExcluded(options, act))) {
      act = nullptr;
    }
    Node* last = act != nullptr ? act : bn;
    bool feeds_quantize = false;
    for (const NodeEntry& use : ConsumersOf(last, 0)) feeds_quantize |= use.node->op == kQuantize;
    if (feeds_quantize) continue;  // the other rewrites' case
    Node* after = graph->addNode(bn->name + "_dequantize", kDequantize);
    RedirectUses(graph, last, 0, after, 0);  // before `after` reads bn
    NoteRewrite(bn, "quantized_before_fp32_ops");
    if (parts.empty()) {
      const std::vector<NodeEntry> q = dequantize->inputs;  // copy: data, min, max
      SetInput(bn, 0, q[0].node, q[0].entry);
      SetInput(bn, 5, q[1].node, q[1].entry);
      SetInput(bn, 6, q[2].node, q[2].entry);
      DetachNode(dequantize);
      BecomeFused(bn, act, kQuantizedOps);
    } else {
      BecomeFused(bn, act, kQuantizedOps);
      BecomeConcatBatchNorm(bn, parts);
      DetachIfUnused(graph, dequantize);
    }
    if (act != nullptr) DetachNode(act);
    RangeFromOptions(options, last->name, bn);
    for (int i = 0; i < 3; ++i) SetInput(after, i, bn, i);
  }
}

// True if `node` reads exactly outputs 0, 1, 2 of `producer` (data, min,
// max) as its inputs 0, 1, 2 and nothing else uses them.
bool SoleReaderOfQuantizedOutput(const Graph* graph, const Node* producer, const Node* node) {
  if (node->inputs.size() != 3) return false;
  for (int i = 0; i < 3; ++i) {
    if (node->inputs[i].node != producer || node->inputs[i].entry != i ||
        UseCount(graph, producer, i) != 1) {
      return false;
    }
  }
  return true;
}

// The pooled op pools over the dimensions after the channel axis: that is
// global pooling only for the channel axis 1.
bool PoolsOverSpatialAxes(const Node* bn) { return Attr(bn, "axis", "1") == "1"; }

// Global average pooling over the spatial dimensions of NCHW-like data, by
// MXNet's quantized op or (`op` "Pooling") its fp32 one; both keep those
// dimensions as 1.
bool IsGlobalAvgPooling(const Node* node, const char* op = kQuantizedPooling) {
  bool global = false;
  const std::string layout = Attr(node, "layout", "None");
  return node->op == op && Attr(node, "pool_type", "max") == "avg" &&
         ParseBool(Attr(node, "global_pool", "false"), &global) && global &&
         (layout == "None" || layout == "NCW" || layout == "NCHW" || layout == "NCDHW");
}

// The number of dimensions of output `entry` of `node` from the shapes MXNet
// infers before the pass when the flow gives it the data shapes
// (MX_STR_SHAPE); -1 when unknown.
int KnownNdim(const Node* node, int entry, int depth = 0) {
  const auto it = node->attrs.find(MX_STR_SHAPE);
  if (it == node->attrs.end()) {
    // A node this pass made (e.g. a dequantize after a BatchNorm it
    // quantized) has no shape: that of its data input, for the ops that keep it.
    const bool keeps_shape = node->op == kDequantize || node->op == kQuantize ||
                             node->op == kBatchNorm || IsFusableActivation(node) ||
                             (IsPluginOp(node->op) && !IsConcatBatchNormOp(node->op) &&
                              node->op.find("pool") == std::string::npos);
    if (!keeps_shape || node->inputs.empty() || depth > 8) return -1;
    return KnownNdim(node->inputs[0].node, node->inputs[0].entry, depth + 1);
  }
  const std::string shape = mxnet::ext::getShapeAt(it->second, entry);
  if (shape.size() < 2 || shape.find("None") != std::string::npos) return -1;
  if (shape == "[]") return 0;
  return static_cast<int>(std::count(shape.begin(), shape.end(), ',')) + 1;
}

// A mean over axes 2 and 3 only, keeping or dropping them, of 4-D data:
// global average pooling of NCHW data (gluon's heads, F.mean(x, axis=(2, 3))).
// Of 5-D data it would not be (the pooled ops pool every axis after the
// channels): where the shapes are known the data must be 4-D.
bool IsSpatialMean(const Node* node, bool* keepdims) {
  if (node->op != "mean" || node->inputs.size() != 1) return false;
  const int ndim = KnownNdim(node->inputs[0].node, node->inputs[0].entry);
  if (ndim != -1 && ndim != 4) return false;
  std::string axis = Attr(node, "axis");
  axis.erase(std::remove(axis.begin(), axis.end(), ' '), axis.end());
  bool exclude = false;
  *keepdims = false;
  return (axis == "(2,3)" || axis == "[2,3]") &&
         ParseBool(Attr(node, "exclude", "false"), &exclude) && !exclude &&
         ParseBool(Attr(node, "keepdims", "false"), keepdims);
}

// quantized_batch_norm -> dequantize -> act -> quantize_v2  =>  one op.
// The activation of a head (a linear one before a mean over H and W, or an
// fp32 global average Pooling, that feeds a quantize, as quantize_mode='full'
// leaves a head) goes into the op too, its range the activation's:
//   quantized_batch_norm -> dequantize -> act -> mean -> quantize_v2
//     =>  quantized_batch_norm_act -> dequantize -> mean -> quantize_v2
// which FuseMeanHead then makes one pooled op.
void FuseDequantizedActivation(Graph* graph, const PassOptions& options) {
  for (Node* bn : NodesInOrder(graph)) {
    if (bn->op != kQuantizedBatchNormOp || IsExcluded(options, bn)) continue;
    Node* dequantize = SoleConsumer(graph, bn, 1);
    if (dequantize == nullptr || dequantize->op != kDequantize ||
        !SoleReaderOfQuantizedOutput(graph, bn, dequantize)) {
      continue;
    }
    Node* act = SoleConsumer(graph, dequantize, 1);
    if (act == nullptr || !IsFusableActivation(act) || IsExcluded(options, act)) continue;
    Node* quantize = SoleConsumer(graph, act, 1);
    if (quantize == nullptr || IsExcluded(options, quantize)) continue;
    bool keepdims = false;
    if (options.fuse_pooling && PoolsOverSpatialAxes(bn) &&
        (IsGlobalAvgPooling(quantize, "Pooling") || IsSpatialMean(quantize, &keepdims))) {
      Node* mean = quantize;
      Node* after = SoleConsumer(graph, mean, 1);
      std::unordered_map<std::string, std::string> fused;
      FusableActivation(act, &fused);
      // A curve cannot be averaged in levels: that is no head the ops take.
      if (after == nullptr || after->op != kQuantize || IsExcluded(options, after) ||
          IsCurveType(fused.at("act_type"))) {
        continue;
      }
      BecomeFused(bn, act, kQuantizedOps);
      RangeFromOptions(options, act->name, bn);
      SetInput(mean, 0, dequantize, 0);
      DetachNode(act);
      continue;
    }
    if (quantize->op != kQuantize) continue;
    BecomeFused(bn, act, kQuantizedOps);
    TakeRange(bn, quantize);  // calibrated on the activation's output
    TakeOverOutputs(graph, quantize, bn);
    DetachNode(act);
    DetachNode(dequantize);
  }
}

// quantized_batch_norm -> quantized_act(relu)  =>  quantized_batch_norm_relu.
void FuseBatchNormRelu(Graph* graph, const PassOptions& options) {
  for (Node* bn : NodesInOrder(graph)) {
    if (bn->op != kQuantizedBatchNormOp || IsExcluded(options, bn)) continue;
    Node* act = SoleConsumer(graph, bn, 1);
    if (act == nullptr || act->op != kQuantizedAct || Attr(act, "act_type") != "relu" ||
        IsExcluded(options, act) || !SoleReaderOfQuantizedOutput(graph, bn, act)) {
      continue;
    }
    bn->op = kQuantizedBatchNormReluOp;
    // Without the post-ReLU range the op uses [0, max_calib_range] of the
    // pre-ReLU calibration, or derives its range at run time.
    RangeFromOptions(options, act->name, bn);
    NoteRewrite(bn, "fused_relu");
    bn->attrs[kFusedActivationAttr] = act->name;
    TakeOverOutputs(graph, act, bn);
  }
}

// The pooled form of a quantized BatchNorm+ReLU or +act op (nullptr for
// others, and for a curve).
const char* PooledOp(const Node* bn) {
  if (bn->op == kQuantizedBatchNormReluOp) return kQuantizedBatchNormReluPoolOp;
  if (bn->op == kQuantizedBatchNormActOp && !HasCurve(bn)) return kQuantizedBatchNormActPoolOp;
  // The concat op after an activation (pooling a plain BatchNorm is not a head).
  if (bn->op == kQuantizedConcatBatchNormOp && !Attr(bn, "act_type").empty() && !HasCurve(bn)) {
    return kQuantizedConcatBatchNormPoolOp;
  }
  return nullptr;
}

// quantized_batch_norm_relu (_act) -> global average pooling  =>  one op.
void FuseGlobalAvgPooling(Graph* graph, const PassOptions& options) {
  for (Node* bn : NodesInOrder(graph)) {
    const char* pooled = PooledOp(bn);
    if (pooled == nullptr || IsExcluded(options, bn) || !PoolsOverSpatialAxes(bn)) continue;
    Node* pool = SoleConsumer(graph, bn, 1);
    if (pool == nullptr || !IsGlobalAvgPooling(pool) || IsExcluded(options, pool) ||
        !SoleReaderOfQuantizedOutput(graph, bn, pool)) {
      continue;
    }
    bn->op = pooled;
    // The op writes the mean in the range calibrated on the pooled output
    // (the classifier's input) when the flow collected it; else in the
    // BN+act range it has (and the mark names the pooling, not the act).
    bn->attrs.erase(kMissingReluRangeAttr);
    RangeFromOptions(options, pool->name, bn);
    NoteRewrite(bn, "global_avg_pool");
    TakeOverOutputs(graph, pool, bn);
  }
}

// Makes pooled op `bn` the head in place of `mean` -> `quantize`: the
// quantize's range (calibrated on the mean), and MXNet's int8 flatten after
// it unless the mean keeps its dimensions ((N, C, 1, 1) -> (N, C); the
// flatten passes the range on).  Detaches `mean`.
void BecomeMeanHead(Graph* graph, Node* bn, Node* mean, Node* quantize, bool keepdims) {
  TakeRange(bn, quantize);
  NoteRewrite(bn, "mean_head");
  Node* out = bn;
  if (!keepdims) {
    out = graph->addNode(mean->name + "_flatten", kQuantizedFlatten);
    for (int i = 0; i < 3; ++i) SetInput(out, i, bn, i);
  }
  TakeOverOutputs(graph, quantize, out);
  DetachNode(mean);
}

// quantized_batch_norm_relu (_act) -> dequantize -> mean(axis=(2, 3)) (or an
// fp32 global average Pooling) -> quantize_v2  =>  the pooled op
// [-> quantized_flatten], with the quantize's range (calibrated on the mean:
// the classifier's input).
void FuseMeanHead(Graph* graph, const PassOptions& options) {
  for (Node* bn : NodesInOrder(graph)) {
    const char* pooled = PooledOp(bn);
    if (pooled == nullptr || IsExcluded(options, bn) || !PoolsOverSpatialAxes(bn)) continue;
    Node* dequantize = SoleConsumer(graph, bn, 1);
    if (dequantize == nullptr || dequantize->op != kDequantize ||
        !SoleReaderOfQuantizedOutput(graph, bn, dequantize)) {
      continue;
    }
    Node* mean = SoleConsumer(graph, dequantize, 1);
    bool keepdims = false;
    if (mean == nullptr || IsExcluded(options, mean)) continue;
    if (IsGlobalAvgPooling(mean, "Pooling")) {  // gluon's GlobalAvgPool2D
      keepdims = true;
    } else if (!IsSpatialMean(mean, &keepdims)) {
      continue;
    }
    Node* quantize = SoleConsumer(graph, mean, 1);
    if (quantize == nullptr || quantize->op != kQuantize || IsExcluded(options, quantize)) {
      continue;
    }
    bn->op = pooled;
    bn->attrs.erase(kMissingReluRangeAttr);  // MXNet calibrates the quantize
    BecomeMeanHead(graph, bn, mean, quantize, keepdims);
    DetachNode(dequantize);
  }
}

// The head of a BatchNorm on fp32 data (e.g. after an fp32 pooling of an fp32
// Concat, which smart mode leaves fp32): BatchNorm -> a linear activation
// the ops fuse -> a mean over H and W (or a global average Pooling) ->
// quantize_v2, each the only reader of the one before.  Returns the
// quantize and sets `act`, `mean` and `keepdims`; nullptr if not that.
Node* MeanHeadAfterFp32BatchNorm(const Graph* graph, const PassOptions& options, Node* bn,
                                 Node** act, Node** mean, bool* keepdims) {
  if (bn->op != kBatchNorm || IsExcluded(options, bn) || bn->inputs.size() != 5 ||
      bn->inputs[0].node->op == kDequantize || !PoolsOverSpatialAxes(bn)) {
    return nullptr;
  }
  bool mean_var = false;
  if (!ParseBool(Attr(bn, "output_mean_var", "false"), &mean_var) || mean_var) return nullptr;
  *act = SoleConsumer(graph, bn, 3);
  std::unordered_map<std::string, std::string> fused;
  // Pooling a BatchNorm without an activation is not a head; a curve cannot be averaged in levels.
  if (*act == nullptr || !FusableActivation(*act, &fused) || IsExcluded(options, *act)) {
    return nullptr;
  }
  if (IsCurveType(fused.at("act_type"))) return nullptr;
  *mean = SoleConsumer(graph, *act, 1);
  if (*mean == nullptr || IsExcluded(options, *mean)) return nullptr;
  if (IsGlobalAvgPooling(*mean, "Pooling")) {
    *keepdims = true;
  } else if (!IsSpatialMean(*mean, keepdims)) {
    return nullptr;
  }
  Node* quantize = SoleConsumer(graph, *mean, 1);
  return quantize != nullptr && quantize->op == kQuantize && !IsExcluded(options, quantize)
             ? quantize
             : nullptr;
}

// An average pooling of planar NCHW data a BatchNorm can take in
// (MXNet's quantized pooling, the plugin's, or an fp32 Pooling).
bool IsAvgPoolingBeforeBatchNorm(const PassOptions& options, const Node* pool) {
  if ((pool->op != kQuantizedPooling && pool->op != kQuantizedAvgPoolingOp &&
       pool->op != "Pooling") ||
      Attr(pool, "pool_type", pool->op == kQuantizedAvgPoolingOp ? "avg" : "max") != "avg" ||
      IsExcluded(options, pool)) {
    return false;
  }
  // 2-D only: a global pooling's kernel and layout say how many dimensions
  // it pools (GlobalAvgPool1D/3D), which ParsePoolingAttrs does not check.
  const std::string kernel = Attr(pool, "kernel", "()");
  const std::string layout = Attr(pool, "layout", "None");
  if (std::count(kernel.begin(), kernel.end(), ',') != 1 ||
      (layout != "None" && layout != "NCHW")) {
    return false;
  }
  // MXNet's fp32 pooling (its own kernel there, not oneDNN) averages the
  // windows that the full convention adds at the edge over fewer values than
  // oneDNN's padded ones; its int8 pooling and the plugin's agree with oneDNN.
  if (pool->op == "Pooling" && Attr(pool, "pooling_convention", "valid") != "valid") return false;
  PoolingAttrs parsed;
  std::string why;
  return ParsePoolingAttrs(pool->attrs, &parsed, &why);
}

// Gives `bn` the attributes of the average pooling `pool` it takes in.
void TakePoolingAttrs(Node* bn, const Node* pool) {
  for (const char* key : {"kernel", "stride", "pad", "global_pool", "pooling_convention",
                          "count_include_pad", "layout"}) {
    const std::string value = Attr(pool, key);
    if (!value.empty()) bn->attrs[key] = value;
  }
  bn->attrs["pool_type"] = "avg";
}

// dequantize.. -> Concat [-> max or avg Pooling] -> BatchNorm -> act -> mean
//   -> quantize_v2  =>  [quantized_pooling..] ->
//   quantized_concat_[avg_pool_]batch_norm_global_avg_pool [-> quantized_flatten]
// A head after a concat that smart mode leaves fp32: the head reads the
// concat's quantized parts, each in its own range (a max pooling between
// pools each part in int8 first, PoolEachConcatPart: exact; an average
// pooling between, the op pools each part), with the quantize's range; no
// dequantize is left before the concat.
void QuantizeConcatMeanHead(Graph* graph, const PassOptions& options) {
  for (Node* bn : NodesInOrder(graph)) {
    Node *act = nullptr, *mean = nullptr;
    bool keepdims = false;
    Node* quantize = MeanHeadAfterFp32BatchNorm(graph, options, bn, &act, &mean, &keepdims);
    if (quantize == nullptr || bn->inputs[0].entry != 0) continue;
    Node* concat = bn->inputs[0].node;
    Node* avg_pool = nullptr;  // an average pooling between the concat and the head
    if (concat->op == "Pooling" && UseCount(graph, concat, 0) == 1 &&
        PoolEachConcatPart(graph, options, concat)) {
      concat = bn->inputs[0].node;  // the pooling's uses are the concat's now
    } else if (IsAvgPoolingBeforeBatchNorm(options, concat) && concat->inputs[0].entry == 0) {
      avg_pool = concat;
      concat = avg_pool->inputs[0].node;
    }
    std::vector<QuantizedPart> parts;
    if (IsExcluded(options, concat) || !DequantizedConcatParts(concat, &parts)) continue;
    BecomeFused(bn, act, kQuantizedOps);
    BecomeConcatBatchNorm(bn, parts);
    bn->op = kQuantizedConcatBatchNormPoolOp;
    NoteRewrite(bn, "quantized_fp32_bn");
    if (avg_pool != nullptr) {
      TakePoolingAttrs(bn, avg_pool);
      bn->op = kQuantizedConcatAvgPoolBatchNormPoolOp;
      NoteRewrite(bn, "avg_pool_in");
    }
    BecomeMeanHead(graph, bn, mean, quantize, keepdims);
    DetachNode(act);
    DetachIfUnused(graph, avg_pool != nullptr ? avg_pool : concat);
  }
}

// x (fp32) -> BatchNorm -> act -> mean(axis=(2, 3)) -> quantize_v2
//   =>  x -> batch_norm_act_global_avg_pool_quantize [-> quantized_flatten]
// with the quantize's range (calibrated on the mean): the mean of the exact
// BN+act values, as fp32 would take it, rounded once.  Without a calibrated
// range (calib_mode none) the input is quantized at run time instead:
//   =>  x -> quantize_v2 -> quantized_batch_norm_relu (_act)_global_avg_pool
void QuantizeFloatInputMeanHead(Graph* graph, const PassOptions& options) {
  for (Node* bn : NodesInOrder(graph)) {
    Node *act = nullptr, *mean = nullptr;
    bool keepdims = false;
    Node* quantize = MeanHeadAfterFp32BatchNorm(graph, options, bn, &act, &mean, &keepdims);
    if (quantize == nullptr) continue;
    std::unordered_map<std::string, std::string> fused;
    FusableActivation(act, &fused);
    bn->attrs[kFusedActivationAttr] = act->name;
    if (HasCalibratedRange(quantize)) {
      bn->op = kBatchNormActPoolQuantizeOp;
    } else {
      Node* input_quantize = RunTimeInputQuantize(graph, options, bn);
      SetInput(bn, 0, input_quantize, 0);
      SetInput(bn, 5, input_quantize, 1);
      SetInput(bn, 6, input_quantize, 2);
      bn->op = IsRelu(fused) ? kQuantizedBatchNormReluPoolOp : kQuantizedBatchNormActPoolOp;
    }
    if (bn->op != kQuantizedBatchNormReluPoolOp) {  // the _act ops take the activation
      for (const auto& kv : fused) bn->attrs[kv.first] = kv.second;
    }
    NoteRewrite(bn, "quantized_fp32_input_bn");
    NoteRewrite(bn, IsRelu(fused) ? "fused_relu" : "fused_" + fused.at("act_type"));
    BecomeMeanHead(graph, bn, mean, quantize, keepdims);
    DetachNode(act);
  }
}

// quantized_concat -> quantized_batch_norm (_relu, _act)
//   =>  quantized_concat_batch_norm reading the concat's parts.
void FuseQuantizedConcat(Graph* graph, const PassOptions& options) {
  for (Node* bn : NodesInOrder(graph)) {
    if (!ReadsConcatParts(bn) || IsExcluded(options, bn) || bn->inputs.size() != 7) continue;
    Node* concat = bn->inputs[0].node;
    int n = 0;
    if (bn->inputs[0].entry != 0 || !IsChannelConcat(concat, kQuantizedConcat, &n) ||
        bn->inputs[5].node != concat || bn->inputs[5].entry != 1 || bn->inputs[6].node != concat ||
        bn->inputs[6].entry != 2 || IsExcluded(options, concat)) {
      continue;
    }
    std::vector<QuantizedPart> parts;
    QuantizedConcatParts(concat, &parts);
    BecomeConcatBatchNorm(bn, parts);
    DetachIfUnused(graph, concat);
  }
}

// dequantize.. -> Concat -> BatchNorm [-> act] -> quantize_v2 (smart mode
// leaves a concat fp32 when its inputs are not all quantized ops' outputs)
//   =>  quantized_concat_batch_norm reading the dequantizes' inputs, with
//     the quantize's range.  The Concat stays for its other readers.
void QuantizeAfterFloatConcat(Graph* graph, const PassOptions& options) {
  for (Node* bn : NodesInOrder(graph)) {
    Node* act = nullptr;
    Node* quantize = QuantizeAfterFp32BatchNorm(graph, options, bn, &act);
    if (quantize == nullptr || bn->inputs[0].entry != 0 || Attr(bn, "axis", "1") != "1") continue;
    Node* concat = bn->inputs[0].node;
    std::vector<QuantizedPart> parts;
    if (IsExcluded(options, concat) || !DequantizedConcatParts(concat, &parts)) continue;
    TakeOverQuantize(graph, bn, act, quantize, kQuantizedOps, "quantized_fp32_bn");
    BecomeConcatBatchNorm(bn, parts);
    DetachIfUnused(graph, concat);
  }
}

// The quantized BatchNorm ops that may take an average pooling in.
bool TakesAvgPooling(const Node* bn) {
  const bool quantized = bn->op == kQuantizedBatchNormOp || bn->op == kQuantizedBatchNormReluOp ||
                         bn->op == kQuantizedBatchNormActOp || IsQuantizedHead(bn);
  const bool float_input = bn->op == kBatchNormQuantizeOp || bn->op == kBatchNormReluQuantizeOp ||
                           bn->op == kBatchNormActQuantizeOp ||
                           bn->op == kBatchNormActPoolQuantizeOp;
  return (quantized && bn->inputs.size() == 7) || (float_input && bn->inputs.size() == 5);
}

// The quantized parts of the concat that the average pooling `pool` reads:
// an fp32 Concat of dequantizes (an fp32 pooling), or MXNet's quantized
// concat, whose range the pooling passes on.  False if it reads neither.
bool PooledConcatParts(const Node* pool, std::vector<QuantizedPart>* parts) {
  const NodeEntry& in = pool->inputs[0];
  if (in.entry != 0) return false;
  if (pool->op == "Pooling") return DequantizedConcatParts(in.node, parts);
  int n = 0;
  if (pool->inputs.size() != 3 || !IsChannelConcat(in.node, kQuantizedConcat, &n) ||
      pool->inputs[1].node != in.node || pool->inputs[1].entry != 1 ||
      pool->inputs[2].node != in.node || pool->inputs[2].entry != 2) {
    return false;
  }
  QuantizedConcatParts(in.node, parts);
  return true;
}

// quantized avg pooling -> quantized_batch_norm (_relu, _act), or
// dequantize -> fp32 avg Pooling -> batch_norm_quantize (_relu, _act)
//   =>  quantized_avg_pool_batch_norm reading the pooling's quantized input
// The BatchNorm reads the exact mean, rounded once with it, instead of the
// mean rounded first (a BatchNorm amplifies that rounding) or kept fp32
// behind a dequantize.  The pooling stays for its other readers.
// An average pooling of a concat (MXNet's quantized one, or an fp32 Concat
// of dequantizes, which smart mode leaves fp32 before a BatchNorm it leaves
// fp32) pools each part instead, in its own range:
//   =>  quantized_concat_avg_pool_batch_norm reading the concat's parts.
void FuseAvgPoolingIntoBatchNorm(Graph* graph, const PassOptions& options) {
  for (Node* bn : NodesInOrder(graph)) {
    if (!TakesAvgPooling(bn) || IsExcluded(options, bn) || Attr(bn, "axis", "1") != "1") continue;
    Node* pool = bn->inputs[0].node;
    if (bn->inputs[0].entry != 0 || !IsAvgPoolingBeforeBatchNorm(options, pool)) continue;
    const bool float_input = bn->inputs.size() == 5;
    if (float_input != (pool->op == "Pooling")) continue;
    std::vector<QuantizedPart> parts;
    const bool of_concat =
        !IsExcluded(options, pool->inputs[0].node) && PooledConcatParts(pool, &parts);
    Node* source = pool;  // what holds the quantized input: the pooling or its dequantize
    if (float_input && !of_concat) {
      source = pool->inputs[0].node;
      if (source->op != kDequantize || source->inputs.size() != 3) continue;
    }
    const std::vector<NodeEntry> quantized = source->inputs;
    if (bn->op == kQuantizedBatchNormReluOp || bn->op == kBatchNormReluQuantizeOp ||
        bn->op == kQuantizedBatchNormReluPoolOp) {
      bn->attrs["act_type"] = "relu";
    }
    // A head (BatchNorm + act + mean) keeps its mean and the pooled range.
    const bool head = IsQuantizedHead(bn) || bn->op == kBatchNormActPoolQuantizeOp;
    TakePoolingAttrs(bn, pool);
    if (of_concat) {
      BecomeConcatBatchNorm(bn, parts);
      bn->op = head ? kQuantizedConcatAvgPoolBatchNormPoolOp : kQuantizedConcatAvgPoolBatchNormOp;
    } else {
      bn->op = head ? kQuantizedAvgPoolBatchNormPoolOp : kQuantizedAvgPoolBatchNormOp;
      for (int i = 0; i < 3; ++i) {
        SetInput(bn, i == 0 ? 0 : 4 + i, quantized[i].node, quantized[i].entry);
      }
    }
    NoteRewrite(bn, "avg_pool_in");
    DetachIfUnused(graph, pool);
  }
}

// quantized_pooling(avg)  =>  quantized_avg_pooling, with the range
// calibrated on the pooled output (from relu_calib_ranges by the pooling's
// name, else marked missing: the flow calibrates it in the same run).
void RequantizeAveragePooling(Graph* graph, const PassOptions& options) {
  for (Node* pool : NodesInOrder(graph)) {
    if (pool->op != kQuantizedPooling || Attr(pool, "pool_type", "max") != "avg" ||
        IsExcluded(options, pool) || pool->inputs.size() != 3) {
      continue;
    }
    PoolingAttrs parsed;
    std::string why;
    if (!ParsePoolingAttrs(pool->attrs, &parsed, &why)) continue;  // MXNet's op runs the rest
    pool->op = kQuantizedAvgPoolingOp;
    RangeFromOptions(options, pool->name, pool);
    NoteRewrite(pool, "own_range");
  }
}

// A uint8 (re)quantize of possibly negative data emits int8.
void AvoidUint8ForSignedInput(Graph* graph, const PassOptions& options) {
  for (Node* quantize : NodesInOrder(graph)) {
    if (IsExcluded(options, quantize)) continue;
    if ((quantize->op != kQuantize && quantize->op != kRequantize) ||
        Attr(quantize, "out_type") != "uint8") {
      continue;
    }
    double lo = 0;
    if (ParseDecimal(Attr(quantize, "min_calib_range"), &lo) && lo >= 0) continue;
    quantize->attrs["out_type"] = "int8";
    NoteRewrite(quantize, "int8_for_signed_input");
  }
}

// The plugin attribute on every node of the plugin's BatchNorm ops.
void MarkPluginNodes(Graph* graph) {
  for (Node* node : NodesInOrder(graph)) {
    if (IsPluginOp(node->op) || node->op == kQuantizedAvgPoolingOp) {
      node->attrs[kPluginAttr] = kPluginAttrVersion;
    }
  }
}

// "__shape__" on the parameter variables (gamma, beta, mean, var) of the
// plugin's BatchNorm ops, from the arrays handed to the pass.
void HintParameterShapes(Graph* graph) {
  for (Node* node : NodesInOrder(graph)) {
    if (!IsPluginOp(node->op)) continue;
    // gamma, beta, moving_mean, moving_var follow the data (num_args inputs
    // of the concat op).
    int first = 1;
    if (IsConcatBatchNormOp(node->op) && !ParseInteger(Attr(node, "num_args"), &first)) {
      continue;
    }
    for (size_t i = first; i < static_cast<size_t>(first) + 4 && i < node->inputs.size(); ++i) {
      Node* param = node->inputs[i].node;
      if (param->op != "null" || param->tensor == nullptr) continue;
      std::string shape = "(";
      for (size_t d = 0; d < param->tensor->shape.size(); ++d) {
        shape += std::to_string(param->tensor->shape[d]) + ",";
      }
      if (param->tensor->shape.size() > 1) shape.pop_back();
      param->attrs["__shape__"] = shape + ")";
    }
  }
}

// MXNet's inferred shapes and types of the pass's input (given the data
// shapes) describe nodes the rewrites changed: not kept in the result.
void ForgetInferredShapes(Graph* graph) {
  for (Node* node : NodesInOrder(graph)) {
    node->attrs.erase(MX_STR_SHAPE);
    node->attrs.erase(MX_STR_DTYPE);
  }
}

mxnet::ext::MXReturnValue QuantizeBatchNormPass(
    Graph* graph, const std::unordered_map<std::string, std::string>& raw_options) {
  try {  // no exception may cross into MXNet
    PassOptions options;
    std::string error;
    if (!ParsePassOptions(raw_options, &options, &error)) {
      ReportError(kPassName, error);
      return mxnet::ext::MX_FAIL;
    }
    PoolBeforeQuantizedConcat(graph, options);
    if (options.quantize_fp32_bn) {
      PoolConcatParts(graph, options);
      QuantizeAfterFloatConcat(graph, options);
      QuantizeNeighbours(graph, options);
      QuantizeBetweenDequantizeAndQuantize(graph, options);
      QuantizeFloatInputBatchNorm(graph, options);
      QuantizeBeforeFloatOps(graph, options);  // first: it reads a concat's parts
      if (options.fuse_pooling) {
        QuantizeConcatMeanHead(graph, options);
        QuantizeFloatInputMeanHead(graph, options);
      }
    }
    FuseDequantizedActivation(graph, options);
    if (options.fuse_relu) FuseBatchNormRelu(graph, options);
    if (options.fuse_pooling) {
      FuseGlobalAvgPooling(graph, options);
      FuseMeanHead(graph, options);
    }
    FuseQuantizedConcat(graph, options);
    // Before the pooling's own rewrite, which would calibrate a pooling that goes away.
    if (options.fuse_pooling) FuseAvgPoolingIntoBatchNorm(graph, options);
    RequantizeAveragePooling(graph, options);
    AvoidUint8ForSignedInput(graph, options);
    MarkPluginNodes(graph);
    HintParameterShapes(graph);
    ForgetInferredShapes(graph);
  } catch (const std::exception& e) {
    ReportError(kPassName, e.what());
    return mxnet::ext::MX_FAIL;
  }
  return mxnet::ext::MX_SUCCESS;
}

}  // namespace
}  // namespace bnq

REGISTER_PASS(BNQ_QUANTIZE).setBody(bnq::QuantizeBatchNormPass);
