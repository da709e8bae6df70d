"""Small fp32 symbols whose BatchNorm MXNet cannot fold into a convolution,
with random parameters, and helpers to quantize and run them."""
import logging

import mxnet as mx
import numpy as np

from mxnet_bnq.graph_runner import run_symbol
from mxnet_bnq.layer_report import sqnr_db


def _conv(x, name, num_filter, kernel=3):
    pad = kernel // 2
    return mx.sym.Convolution(x, num_filter=num_filter, kernel=(kernel, kernel),
                              pad=(pad, pad), name=name)


def bn_after_add():
    """conv + conv -> BN -> ReLU -> conv: the BN gets int8 from a conv+sum."""
    data = mx.sym.var('data')
    s = _conv(data, 'conv_a', 8) + _conv(data, 'conv_b', 8)
    bn = mx.sym.BatchNorm(s, fix_gamma=False, eps=1e-5, name='bn')
    r = mx.sym.Activation(bn, act_type='relu', name='relu')
    return mx.sym.Flatten(_conv(r, 'conv_c', 4, kernel=1), name='flat')


def bn_after_pool():
    """conv -> ReLU -> pool -> BN -> ReLU -> conv: the BN gets uint8."""
    data = mx.sym.var('data')
    r0 = mx.sym.Activation(_conv(data, 'conv_a', 8), act_type='relu', name='relu0')
    p = mx.sym.Pooling(r0, kernel=(2, 2), stride=(2, 2), pool_type='max', name='pool')
    bn = mx.sym.BatchNorm(p, fix_gamma=False, eps=1e-5, name='bn')
    r = mx.sym.Activation(bn, act_type='relu', name='relu')
    return mx.sym.Flatten(_conv(r, 'conv_c', 4, kernel=1), name='flat')


def bn_relu_global_pool():
    """conv + conv -> BN -> ReLU -> global average pooling -> FC: the head of a
    pre-activation ResNet."""
    data = mx.sym.var('data')
    s = _conv(data, 'conv_a', 8) + _conv(data, 'conv_b', 8)
    bn = mx.sym.BatchNorm(s, fix_gamma=False, eps=1e-5, name='bn')
    r = mx.sym.Activation(bn, act_type='relu', name='relu')
    p = mx.sym.Pooling(r, kernel=(1, 1), global_pool=True, pool_type='avg', name='pool')
    return mx.sym.FullyConnected(mx.sym.Flatten(p, name='flat'), num_hidden=5, name='fc')


def bn_on_input():
    """BN on the network input -> conv -> ReLU -> conv (MXNet leaves the BN fp32)."""
    data = mx.sym.var('data')
    bn = mx.sym.BatchNorm(data, fix_gamma=False, eps=1e-5, name='bn')
    r = mx.sym.Activation(_conv(bn, 'conv_a', 8), act_type='relu', name='relu')
    return mx.sym.Flatten(_conv(r, 'conv_c', 4, kernel=1), name='flat')


def _dense_layer(x, name, growth):
    """BN -> ReLU -> conv (the new features of a dense block)."""
    bn = mx.sym.BatchNorm(x, fix_gamma=False, eps=1e-5, name=name + '_bn')
    return _conv(mx.sym.Activation(bn, act_type='relu', name=name + '_relu'), name + '_conv',
                 growth)


def bn_after_concat(head='conv', quantized_concat=False, act_type='relu'):
    """A dense block as densenet's: stem conv -> ReLU (uint8), then twice
    concat(x, BN -> ReLU -> conv(x)) (int8 features), then BN -> ReLU -> a
    conv, or with head='pool' a global average pooling -> FC, or with
    head='max_pool_mean' (or 'avg_pool_mean') a max (average) pooling before
    the BN and a mean over H and W (F.mean) -> FC after the ReLU, or with
    head='avg_pool' an average pooling before the BN -> ReLU -> conv.  Every
    BN reads a concat of parts in their own ranges (the second one a nested
    concat)."""
    data = mx.sym.var('data')
    x = mx.sym.Activation(_conv(data, 'stem', 6), act_type='relu', name='stem_relu')
    if quantized_concat:  # MXNet's smart mode then quantizes the concats (as in densenet121)
        x = mx.sym.Pooling(x, kernel=(3, 3), stride=(1, 1), pad=(1, 1), pool_type='max',
                           name='stem_pool')
    for i in range(2):
        x = mx.sym.concat(x, _dense_layer(x, 'layer%d' % i, 5), dim=1, name='concat%d' % i)
    if head in ('max_pool_mean', 'avg_pool_mean', 'avg_pool'):
        x = mx.sym.Pooling(x, kernel=(2, 2), stride=(2, 2), pool_type=head[:3], name='head_pool')
    r = mx.sym.Activation(mx.sym.BatchNorm(x, fix_gamma=False, eps=1e-5, name='bn'),
                          act_type=act_type, name='act')
    if head == 'pool':
        p = mx.sym.Pooling(r, kernel=(1, 1), global_pool=True, pool_type='avg', name='pool')
        return mx.sym.FullyConnected(mx.sym.Flatten(p, name='flat'), num_hidden=5, name='fc')
    if head in ('max_pool_mean', 'avg_pool_mean'):
        return mx.sym.FullyConnected(mx.sym.mean(r, axis=(2, 3), name='mean'), num_hidden=5,
                                     name='fc')
    return mx.sym.Flatten(_conv(r, 'conv_c', 4, kernel=1), name='flat')


def bn_after_concat_pool():
    return bn_after_concat(head='pool')


def bn_after_quantized_concat():
    return bn_after_concat(quantized_concat=True)


def bn_after_quantized_concat_pool():
    return bn_after_concat(head='pool', quantized_concat=True)


def random_params(sym, data_shape, seed=0):
    rng = np.random.default_rng(seed)
    arg_shapes, _, aux_shapes = sym.infer_shape(data=data_shape)
    args = {name: mx.nd.array(rng.normal(0, 0.3, shape))
            for name, shape in zip(sym.list_arguments(), arg_shapes) if name != 'data'}
    aux = {}
    for name, shape in zip(sym.list_auxiliary_states(), aux_shapes):
        values = rng.normal(0, 1, shape) if name.endswith('mean') else rng.uniform(0.5, 2, shape)
        aux[name] = mx.nd.array(values)
    return args, aux


def quantize_mxnet(sym, args, aux, calib_data, calib_mode='naive', **kwargs):
    """MXNet's own flow (the plugin's op replaces MXNet's where loaded)."""
    return mx.contrib.quantization.quantize_model_mkldnn(
        sym, args, aux, ctx=mx.cpu(), calib_mode=calib_mode,
        calib_data=mx.io.NDArrayIter(calib_data, batch_size=len(calib_data)),
        num_calib_examples=len(calib_data), label_names=None,
        logger=logging.getLogger('quantize'), **kwargs)


# The package's helper (runs a symbol on one batch); sqnr_db is the package's too.
forward = run_symbol
__all__ = ['bn_after_add', 'bn_after_pool', 'bn_relu_global_pool', 'bn_on_input',
           'bn_after_concat', 'bn_after_concat_pool', 'bn_after_quantized_concat',
           'bn_after_quantized_concat_pool', 'random_params',
           'quantize_mxnet', 'forward', 'sqnr_db']
