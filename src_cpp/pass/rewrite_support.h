// The vocabulary of the BNQ_QUANTIZE rewrites: reading a node's attributes,
// matching single-reader chains, moving a quantize's range onto the op that
// replaces it, and turning an fp32 BatchNorm (and the activation after it)
// into one of the plugin's ops.
#pragma once

#include <string>
#include <unordered_map>
#include <vector>

#include "../graph_edit.h"
#include "../op_names.h"
#include "../pass_options.h"
#include "mxnet/lib_api.h"

namespace bnq {
namespace pass {

// The names of MXNet's ops that the rewrites match and make.
inline constexpr char kBatchNorm[] = "BatchNorm";
inline constexpr char kQuantize[] = "_contrib_quantize_v2";
inline constexpr char kDequantize[] = "_contrib_dequantize";
inline constexpr char kRequantize[] = "_contrib_requantize";
inline constexpr char kQuantizedAct[] = "_contrib_quantized_act";
inline constexpr char kQuantizedPooling[] = "_contrib_quantized_pooling";
inline constexpr char kQuantizedFlatten[] = "_contrib_quantized_flatten";
inline constexpr char kConcat[] = "Concat";
inline constexpr char kQuantizedConcat[] = "_contrib_quantized_concat";

// The attribute `key` of `node`, `fallback` if it has none.
std::string Attr(const Node* node, const std::string& key, const std::string& fallback = "");

// Appends `rewrite` to the node's list of rewrites ("a+b").
void NoteRewrite(Node* node, const std::string& rewrite);

// Gives every use of the quantized outputs (data, min, max) of `from` to
// those of `to`, and detaches `from`.
void TakeOverOutputs(Graph* graph, Node* from, Node* to);

// The node is excluded by name or by op (excluded_sym_names, excluded_op_names).
bool IsExcluded(const PassOptions& options, const Node* node);

// The single consumer of output 0 of `node` if it is the only use of any of
// the node's outputs, else nullptr.
Node* SoleConsumer(const Graph* graph, const Node* node, int num_outputs);

// True if `node` reads exactly outputs 0, 1, 2 of `producer` (data, min,
// max) as its inputs 0, 1, 2 and nothing else uses them.
bool SoleReaderOfQuantizedOutput(const Graph* graph, const Node* producer, const Node* node);

// Detaches `node` if nothing uses it any more, then the concats and
// dequantizes that only it read.
void DetachIfUnused(const Graph* graph, Node* node);

// `v` printed so that it reads back as the same float.
std::string FloatString(float v);

// Both ends of the calibrated range are numbers (unset ones may read "None").
bool HasCalibratedRange(const Node* quantize);

// Gives `bn` the calibrated range of `quantize` (none if it has none).
void TakeRange(Node* bn, const Node* quantize);

// Sets the calibrated range of `bn` from options.relu_calib_ranges[key], or
// marks it as missing the range of `key` (the op then derives one).
void RangeFromOptions(const PassOptions& options, const std::string& key, Node* bn);

// A quantize_v2 of the fp32 data of `bn` that finds its range at run time
// (not yet read by `bn`).  uint8 cannot hold a negative input, and the
// input's sign is known only at run time: 'auto' then.
Node* RunTimeInputQuantize(Graph* graph, const PassOptions& options, const Node* bn);

// The fp32 activation `node` as the _act ops' attributes (act_type "relu" for
// a ReLU); false if the plugin's ops cannot fuse it.  Activation's act_type
// and the operators of the same name are the same function.
bool FusableActivation(const Node* node, std::unordered_map<std::string, std::string>* act);

// The act_type names a curve (the pooled ops cannot take it).
bool IsCurveType(const std::string& act_type);

// The plugin op's activation is a curve.
bool HasCurve(const Node* bn);

// The plugin's ops can fuse the fp32 activation `node`.
bool IsFusableActivation(const Node* node);

// The fused activation (as FusableActivation gives it) is a ReLU.
bool IsRelu(const std::unordered_map<std::string, std::string>& act);

// The op names of a rewrite: without activation, with ReLU, with another one.
struct FusedOps {
  const char* plain;
  const char* relu;
  const char* act;
};

// One copy per file (not inline): the names they point to have internal linkage.
constexpr FusedOps kQuantizedOps{kQuantizedBatchNormOp, kQuantizedBatchNormReluOp,
                                 kQuantizedBatchNormActOp};

constexpr FusedOps kFloatInputOps{kBatchNormQuantizeOp, kBatchNormReluQuantizeOp,
                                  kBatchNormActQuantizeOp};

// Makes `bn` the op of `ops` for the activation `act_node` (nullptr: none),
// copying an activation's attributes.
void BecomeFused(Node* bn, const Node* act_node, const FusedOps& ops);

// An fp32 BatchNorm whose only use is a quantize_v2, possibly through an fp32
// activation that the ops fuse and that has no other use; returns that
// quantize and sets `act`.
Node* QuantizeAfterFp32BatchNorm(const Graph* graph, const PassOptions& options, Node* bn,
                                 Node** act);

// Makes fp32 `bn` (and the fp32 activation `act` after it, if any) the op of
// `ops` with the range of `quantize`, and gives it the uses of `quantize`.
void TakeOverQuantize(Graph* graph, Node* bn, Node* act, Node* quantize, const FusedOps& ops,
                      const char* rewrite);

// Turns fp32 `bn` (and `relu`) into a quantized BatchNorm reading (data, min,
// max), taking over the uses of `quantize`.
void QuantizeBatchNorm(Graph* graph, Node* bn, Node* act, const NodeEntry data, const NodeEntry min,
                       const NodeEntry max, Node* quantize, const char* rewrite);

// The input index of gamma, the first of the parameters (gamma, beta,
// moving_mean, moving_var) of a BatchNorm or plugin BatchNorm op: after the
// data (num_args parts of the concat ops); false if num_args is unreadable.
bool GammaInput(const Node* bn, int* index);

// The quantized head ops: BatchNorm + ReLU or act + global average pooling.
bool IsQuantizedHead(const Node* bn);

}  // namespace pass
}  // namespace bnq
