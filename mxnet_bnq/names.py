"""The names and numbers the Python package shares with the C++ library
(src_cpp/op_names.h, QuantizedRange) and with MXNet's quantization flow:
spelled once here.  tests/test_loader.py checks them against the loaded
library (``bnq_shared_names``) and against the ops MXNet then has."""

# The plugin's BatchNorm ops.  MXNet has its own `_contrib_quantized_batch_norm`,
# which the plugin's registration replaces; the others only the plugin has.
QUANTIZED_BATCH_NORM = '_contrib_quantized_batch_norm'
QUANTIZED_BATCH_NORM_RELU = '_contrib_quantized_batch_norm_relu'
QUANTIZED_BATCH_NORM_RELU_POOL = '_contrib_quantized_batch_norm_relu_global_avg_pool'
BATCH_NORM_QUANTIZE = '_contrib_batch_norm_quantize'
BATCH_NORM_RELU_QUANTIZE = '_contrib_batch_norm_relu_quantize'
# BatchNorm + the activation its attributes give (act_type clip or leaky, ...).
QUANTIZED_BATCH_NORM_ACT = '_contrib_quantized_batch_norm_act'
BATCH_NORM_ACT_QUANTIZE = '_contrib_batch_norm_act_quantize'
QUANTIZED_BATCH_NORM_ACT_POOL = '_contrib_quantized_batch_norm_act_global_avg_pool'
BATCH_NORM_ACT_POOL_QUANTIZE = '_contrib_batch_norm_act_global_avg_pool_quantize'
# Average pooling, then BatchNorm [+ act] on the unrounded mean.
QUANTIZED_AVG_POOL_BATCH_NORM = '_contrib_quantized_avg_pool_batch_norm'
# The same followed by global average pooling (a head after an average pooling).
QUANTIZED_AVG_POOL_BATCH_NORM_POOL = '_contrib_quantized_avg_pool_batch_norm_global_avg_pool'
# BatchNorm [+ act] over a concatenation of quantized inputs, each in its own range.
QUANTIZED_CONCAT_BATCH_NORM = '_contrib_quantized_concat_batch_norm'
QUANTIZED_CONCAT_BATCH_NORM_POOL = '_contrib_quantized_concat_batch_norm_global_avg_pool'
# The same with an average pooling between the concat and the BatchNorm.
QUANTIZED_CONCAT_AVG_POOL_BATCH_NORM = '_contrib_quantized_concat_avg_pool_batch_norm'
QUANTIZED_CONCAT_AVG_POOL_BATCH_NORM_POOL = (
    '_contrib_quantized_concat_avg_pool_batch_norm_global_avg_pool')
BATCH_NORM_OPS = (QUANTIZED_BATCH_NORM, QUANTIZED_BATCH_NORM_RELU, QUANTIZED_BATCH_NORM_RELU_POOL,
                  BATCH_NORM_QUANTIZE, BATCH_NORM_RELU_QUANTIZE, QUANTIZED_BATCH_NORM_ACT,
                  BATCH_NORM_ACT_QUANTIZE, QUANTIZED_BATCH_NORM_ACT_POOL,
                  BATCH_NORM_ACT_POOL_QUANTIZE, QUANTIZED_AVG_POOL_BATCH_NORM,
                  QUANTIZED_CONCAT_BATCH_NORM, QUANTIZED_CONCAT_BATCH_NORM_POOL,
                  QUANTIZED_AVG_POOL_BATCH_NORM_POOL, QUANTIZED_CONCAT_AVG_POOL_BATCH_NORM,
                  QUANTIZED_CONCAT_AVG_POOL_BATCH_NORM_POOL)

# MXNet's quantized average pooling, writing the mean in its own calibrated range.
QUANTIZED_AVG_POOLING = '_contrib_quantized_avg_pooling'

# The subgraph op of an int8 region and the partitioner that makes it.
REGION_OP = '_bnq_quantized_region'
PARTITIONER = 'BNQ_REGIONS'

# The graph pass, and the hidden attributes it writes: the rewrite that made a
# node, and the marker of every node that needs the plugin's numerics.
PASS_NAME = 'BNQ_QUANTIZE'
REWRITE_ATTR = '__bnq_rewrite__'
PLUGIN_ATTR = '__bnq_plugin__'
# On a BatchNorm the pass quantized without the output range it needs: the
# name of the node (a quantized ReLU it fused, or the fp32 activation or
# BatchNorm before fp32 ops) whose output range the flow then collects.
MISSING_RELU_RANGE_ATTR = '__bnq_missing_relu_range__'
# On a BatchNorm op that fused an activation: that activation node's name.
FUSED_ACTIVATION_ATTR = '__bnq_fused_activation__'

# Quantization levels per max(|min|, |max|) of a tensor's real range.
QUANTIZED_RANGE = {'int8': 127.5, 'uint8': 255.5}

# MXNet's names: the prefix its quantize pass gives a node's quantized twin,
# and the attribute with which a variable carries its shape.
QUANTIZED_PREFIX = 'quantized_'
SHAPE_ATTR = '__shape__'


def shared_with_library():
    """The names the library also spells (as its bnq_shared_names() gives them)."""
    return {'batch_norm_ops': list(BATCH_NORM_OPS), 'region_op': REGION_OP,
            'partitioner': PARTITIONER, 'pass_name': PASS_NAME, 'rewrite_attr': REWRITE_ATTR,
            'plugin_attr': PLUGIN_ATTR, 'missing_relu_range_attr': MISSING_RELU_RANGE_ATTR,
            'fused_activation_attr': FUSED_ACTIVATION_ATTR,
            'quantized_range': dict(QUANTIZED_RANGE)}
