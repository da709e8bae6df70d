// The BNQ_QUANTIZE graph pass: runs on a symbol that MXNet's quantization flow
// produced (Symbol.optimize_for("BNQ_QUANTIZE", args, aux, **options)) and
// applies these rewrites (declared in rewrites.h, one file per kind), in this
// order:
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
#include <string>
#include <unordered_map>

#include "../error_reporting.h"
#include "../graph_edit.h"
#include "../number_parsing.h"
#include "../op_names.h"
#include "../pass_options.h"
#include "mxnet/lib_api.h"
#include "rewrite_support.h"
#include "rewrites.h"

namespace bnq {
namespace pass {
namespace {

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
    int first = 1;
    if (!GammaInput(node, &first)) continue;
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
}  // namespace pass
}  // namespace bnq

REGISTER_PASS(BNQ_QUANTIZE).setBody(bnq::pass::QuantizeBatchNormPass);
