"""The plugin op inside real quantized graphs made by MXNet's own flow."""
import json

import mxnet as mx
import numpy as np
import pytest
import quant_reference as ref
import small_nets
from bn_cases import assert_within_one_step

import mxnet_bnq

DATA_SHAPE = (8, 4, 8, 8)


def quantized_graph(net, seed=0):
    sym = net()
    args, aux = small_nets.random_params(sym, DATA_SHAPE, seed)
    calib = np.random.default_rng(seed + 1).normal(0, 1, (32,) + DATA_SHAPE[1:]).astype('f')
    qsym, qargs, qaux = small_nets.quantize_mxnet(sym, args, aux, calib)
    return sym, args, aux, qsym, qargs, qaux


def bn_node(qsym):
    nodes = json.loads(qsym.tojson())['nodes']
    found = [n for n in nodes if n['op'] == '_contrib_quantized_batch_norm']
    assert len(found) == 1, [n['op'] for n in nodes]
    return found[0], nodes


@pytest.mark.parametrize('net,in_dtype', [(small_nets.bn_after_add, 'int8'),
                                          (small_nets.bn_after_pool, 'uint8')])
def test_op_fed_by_quantized_producer_matches_reference(net, in_dtype):
    sym, args, aux, qsym, qargs, qaux = quantized_graph(net)
    node, _ = bn_node(qsym)
    internals = qsym.get_internals()
    bn_outputs = [internals[node['name'] + s] for s in ('_output', '_min_output', '_max_output')]
    children = bn_outputs[0].get_children()  # data, gamma, beta, mean, var, min_data, max_data
    probe = mx.sym.Group([children[0], children[5], children[6]] + bn_outputs)
    x = np.random.default_rng(7).normal(0, 1, DATA_SHAPE).astype('f')
    q_in, min_in, max_in, q_out, min_out, max_out = small_nets.forward(probe, qargs, qaux, x)
    assert str(q_in.dtype) == in_dtype and q_out.dtype == np.int8

    attrs = node['attrs']
    expected, lo, hi = ref.quantized_batch_norm(
        q_in, qargs['bn_gamma'].asnumpy(), qargs['bn_beta'].asnumpy(),
        qaux['bn_moving_mean'].asnumpy(), qaux['bn_moving_var'].asnumpy(), float(min_in[0]),
        float(max_in[0]), eps=float(attrs['eps']), fix_gamma=attrs['fix_gamma'] == 'True',
        min_calib_range=float(attrs['min_calib_range']),
        max_calib_range=float(attrs['max_calib_range']))
    assert_within_one_step(q_out, expected)
    assert (float(min_out[0]), float(max_out[0])) == pytest.approx((lo, hi))


@pytest.mark.parametrize('net', [small_nets.bn_after_add, small_nets.bn_after_pool])
def test_quantized_graph_follows_fp32(net):
    sym, args, aux, qsym, qargs, qaux = quantized_graph(net)
    x = np.random.default_rng(3).normal(0, 1, DATA_SHAPE).astype('f')
    (fp32,) = small_nets.forward(sym, args, aux, x)
    (int8,) = small_nets.forward(qsym, qargs, qaux, x)
    assert small_nets.sqnr_db(fp32, int8) > 20


def test_saved_quantized_model_reloads_with_identical_output(tmp_path):
    _, _, _, qsym, qargs, qaux = quantized_graph(small_nets.bn_after_add)
    x = np.random.default_rng(5).normal(0, 1, DATA_SHAPE).astype('f')
    (before,) = small_nets.forward(qsym, qargs, qaux, x)
    prefix = str(tmp_path / 'model-quantized')
    mx.model.save_checkpoint(prefix, 0, qsym, qargs, qaux)
    sym2, args2, aux2 = mx.model.load_checkpoint(prefix, 0)
    (after,) = small_nets.forward(sym2, args2, aux2, x)
    assert np.array_equal(before, after)


def test_bn_relu_and_global_avg_pooling_fuse_into_one_op():
    """The pass fuses the plugin's BN+ReLU with MXNet's int8 global average
    pooling.  Given only the ReLU's range the op writes the mean in it (logits
    near the two ops unfused, closer to fp32: one rounding); given the pooled
    output's range, as the flow collects it, the classifier reads the mean in
    that range, and the logits come closer still."""
    sym, args, aux, native, nargs, naux = quantized_graph(small_nets.bn_relu_global_pool)
    relu_ranges = {'quantized_relu': (0.0, 4.0)}
    fused = mxnet_bnq.rewrite_quantized_symbol(native, nargs, naux, relu_calib_ranges=relu_ranges)
    unfused = native.optimize_for('BNQ_QUANTIZE', nargs, naux, skip_infer=True,
                                  fuse_pooling='false', relu_calib_ranges='quantized_relu=0:4')
    fused_ops = [n['op'] for n in json.loads(fused.tojson())['nodes']]
    unfused_ops = [n['op'] for n in json.loads(unfused.tojson())['nodes']]
    assert '_contrib_quantized_batch_norm_relu_global_avg_pool' in fused_ops, fused_ops
    assert '_contrib_quantized_pooling' not in fused_ops, fused_ops
    assert '_contrib_quantized_act' not in fused_ops, fused_ops
    assert '_contrib_quantized_batch_norm_relu' in unfused_ops, unfused_ops
    # Unfused, the average pooling is the plugin's (the mean in its own range).
    assert mxnet_bnq.names.QUANTIZED_AVG_POOLING in unfused_ops, unfused_ops

    calib = np.random.default_rng(1).normal(0, 1, (32,) + DATA_SHAPE[1:]).astype('f')
    pooled_max = float(small_nets.forward(sym.get_internals()['pool_output'], args, aux,
                                          calib)[0].max())
    own_range = mxnet_bnq.rewrite_quantized_symbol(
        native, nargs, naux, relu_calib_ranges=dict(relu_ranges, quantized_pool=(0, pooled_max)))
    x = np.random.default_rng(3).normal(0, 1, DATA_SHAPE).astype('f')
    (fp32,) = small_nets.forward(sym, args, aux, x)
    (fused_out,) = small_nets.forward(fused, nargs, naux, x)
    (unfused_out,) = small_nets.forward(unfused, nargs, naux, x)
    (own_out,) = small_nets.forward(own_range, nargs, naux, x)
    assert small_nets.sqnr_db(unfused_out, fused_out) > 35
    # Seen: 39.8 dB unfused, 43.6 dB fused (one rounding), 45.0 dB in the pooled range.
    assert small_nets.sqnr_db(fp32, fused_out) > small_nets.sqnr_db(fp32, unfused_out)
    assert small_nets.sqnr_db(fp32, own_out) > small_nets.sqnr_db(fp32, unfused_out) + 1


def _head(pool_kwargs, axis=1, extra_output=False):
    """quantize_v2 -> plugin BN+ReLU -> MXNet int8 pooling, built by hand."""
    data = mx.sym.var('data')
    q = mx.sym.contrib.quantize_v2(data, out_type='int8', min_calib_range=-3.0,
                                   max_calib_range=3.0, name='quantize')
    params = [mx.sym.var('bn_' + n) for n in ('gamma', 'beta', 'moving_mean', 'moving_var')]
    bn = mx.sym.contrib.quantized_batch_norm_relu(q[0], *params, q[1], q[2], axis=axis,
                                                  min_calib_range=0.0, max_calib_range=4.0,
                                                  name='bn')
    pool = mx.sym.contrib.quantized_pooling(bn[0], bn[1], bn[2], name='pool', **pool_kwargs)
    return mx.sym.Group([pool[0], bn[1]]) if extra_output else pool[0]


GLOBAL_AVG = dict(kernel=(1, 1), global_pool=True, pool_type='avg')


@pytest.mark.parametrize('pool,head_kwargs,options,fused', [
    (GLOBAL_AVG, {}, {}, True),
    (GLOBAL_AVG, {}, dict(fuse_pooling='false'), False),
    (GLOBAL_AVG, {}, dict(excluded_sym_names='pool'), False),
    (GLOBAL_AVG, {}, dict(excluded_sym_names='bn'), False),
    (dict(kernel=(2, 2), pool_type='avg'), {}, {}, False),                   # not global
    (dict(kernel=(1, 1), global_pool=True, pool_type='max'), {}, {}, False),
    (GLOBAL_AVG, dict(axis=3), {}, False),                                   # not channel axis 1
    (GLOBAL_AVG, dict(extra_output=True), {}, False),                        # min used twice
])
def test_pooling_fuses_only_where_exact(pool, head_kwargs, options, fused):
    mxnet_bnq.load()  # the plugin's symbol functions exist once it is loaded
    sym = _head(pool, **head_kwargs)
    args = {'bn_' + n: mx.nd.ones(8) for n in ('gamma', 'beta', 'moving_mean', 'moving_var')}
    out = sym.optimize_for('BNQ_QUANTIZE', args, {}, skip_infer=True, **options)
    ops = [n['op'] for n in json.loads(out.tojson())['nodes']]
    assert ('_contrib_quantized_batch_norm_relu_global_avg_pool' in ops) == fused, ops
    # Unfused: MXNet's max pooling, the plugin's average pooling.
    pooling_ops = {'_contrib_quantized_pooling', mxnet_bnq.names.QUANTIZED_AVG_POOLING}
    assert bool(pooling_ops & set(ops)) != fused, ops


def max_pooled_quantized_concat():
    """stem conv -> ReLU -> max pool (so that smart mode quantizes the
    concat), concat(x, conv(x)) -> max Pooling -> conv: no BatchNorm."""
    data = mx.sym.var('data')
    x = mx.sym.Activation(small_nets._conv(data, 'stem', 6), act_type='relu', name='stem_relu')
    x = mx.sym.Pooling(x, kernel=(3, 3), stride=(1, 1), pad=(1, 1), pool_type='max', name='p0')
    x = mx.sym.concat(x, small_nets._conv(x, 'new', 5), dim=1, name='concat')
    x = mx.sym.Pooling(x, kernel=(2, 2), stride=(2, 2), pool_type='max', name='pool')
    return mx.sym.Flatten(small_nets._conv(x, 'head', 4, kernel=1), name='flat')


def test_max_pooling_of_an_int8_concat_pools_each_part_with_the_same_bits():
    """MXNet's int8 max pooling of its int8 concat becomes the int8 concat of
    each part's max pooling (PoolBeforeQuantizedConcat): the concat's
    rescaling is a monotone rounding, so the bits do not change."""
    _, _, _, native, nargs, naux = quantized_graph(max_pooled_quantized_concat)
    ops = [n['op'] for n in json.loads(native.tojson())['nodes']]
    assert '_contrib_quantized_concat' in ops and ops.count('_contrib_quantized_pooling') == 2, ops
    ours = native.optimize_for('BNQ_QUANTIZE', nargs, naux, skip_infer=True)
    nodes = json.loads(ours.tojson())['nodes']
    concat = next(n for n in nodes if n['op'] == '_contrib_quantized_concat')
    producers = [nodes[i]['op'] for i, _, _ in concat['inputs'][:2]]
    assert producers == ['_contrib_quantized_pooling'] * 2, producers
    x = np.random.default_rng(3).normal(0, 1, DATA_SHAPE).astype('f')
    (expected,) = small_nets.forward(native, nargs, naux, x)
    (got,) = small_nets.forward(ours, nargs, naux, x)
    np.testing.assert_array_equal(got, expected)
