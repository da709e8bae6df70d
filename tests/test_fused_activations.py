"""BatchNorm + clip (ReLU6) / leaky ReLU as one plugin op: every pattern the
BNQ_QUANTIZE pass meets, the numbers against fp32 and against the same graph
with the activation left fp32, and the fused op inside regions."""
import json

import int8_arithmetic
import mxnet as mx
import numpy as np
import pytest
import small_nets

import mxnet_bnq
from mxnet_bnq.graph_runner import run_symbol

SHAPE = (8, 4, 8, 8)
# (spelling, the fused op's attributes)
ACTIVATIONS = [
    (lambda x: mx.sym.clip(x, 0, 6, name='act'), {'act_type': 'clip', 'a_min': '0', 'a_max': '6'}),
    (lambda x: mx.sym.clip(x, -1, 1.5, name='act'),
     {'act_type': 'clip', 'a_min': '-1', 'a_max': '1.5'}),
    (lambda x: mx.sym.LeakyReLU(x, act_type='leaky', slope=0.1, name='act'),
     {'act_type': 'leaky', 'slope': '0.1'}),
    (lambda x: mx.sym.LeakyReLU(x, name='act'), {'act_type': 'leaky', 'slope': '0.25'}),
]
IDS = ['relu6', 'clip', 'leaky0.1', 'leaky_default']
# The curves MXNet's convolution fusion takes, in their usual spellings.
CURVES = [
    (lambda x: mx.sym.sigmoid(x, name='act'), {'act_type': 'sigmoid'}),
    (lambda x: mx.sym.Activation(x, act_type='tanh', name='act'), {'act_type': 'tanh'}),
    (lambda x: mx.sym.Activation(x, act_type='softrelu', name='act'), {'act_type': 'softrelu'}),
    (lambda x: mx.sym.LeakyReLU(x, act_type='gelu', name='act'), {'act_type': 'gelu'}),
]
CURVE_IDS = ['sigmoid', 'tanh', 'softrelu', 'gelu']
ACTIVATIONS += CURVES
IDS += CURVE_IDS
# Every op an fp32 activation may be left as.
ACTIVATION_OPS = {'clip', 'LeakyReLU', 'relu', 'Activation', 'sigmoid', 'tanh'}


def nodes(sym):
    return json.loads(sym.tojson())['nodes']


def ops(sym):
    return [n['op'] for n in nodes(sym) if n['op'] != 'null']


def round_trips(sym):
    """The quantize and dequantize nodes of `sym`."""
    return sum(op in ('_contrib_quantize_v2', '_contrib_dequantize') for op in ops(sym))


def node(sym, name):
    (found,) = [n for n in nodes(sym) if n['name'] == name]
    return found


def conv(x, name, num_filter, kernel=3):
    return mx.sym.Convolution(x, num_filter=num_filter, kernel=(kernel, kernel),
                              pad=(kernel // 2, kernel // 2), name=name)


def bn_act_after_add(act):
    """conv + conv -> BN -> act -> conv: MXNet leaves the activation fp32 and
    the BN too in smart mode (dequantize -> BN -> act -> quantize), or
    quantizes the BN in full mode (quantized BN -> dequantize -> act -> quantize)."""
    data = mx.sym.var('data')
    s = conv(data, 'conv_a', 8) + conv(data, 'conv_b', 8)
    bn = mx.sym.BatchNorm(s, fix_gamma=False, eps=1e-5, name='bn')
    return mx.sym.Flatten(conv(act(bn), 'conv_c', 4, kernel=1), name='flat')


def bn_act_on_input(act):
    """BN -> act on the network input, then conv -> ReLU -> conv."""
    data = mx.sym.var('data')
    bn = mx.sym.BatchNorm(data, fix_gamma=False, eps=1e-5, name='bn')
    r = mx.sym.Activation(conv(act(bn), 'conv_a', 8), act_type='relu', name='relu')
    return mx.sym.Flatten(conv(r, 'conv_c', 4, kernel=1), name='flat')


def quantize(sym, args, aux, calib, **kwargs):
    kwargs.setdefault('regions', False)
    return mxnet_bnq.quantize_model_mkldnn(
        sym, args, aux, calib_mode=kwargs.pop('calib_mode', 'naive'), label_names=None,
        quantized_dtype='auto', calib_data=mx.io.NDArrayIter(calib, batch_size=8), **kwargs)


def data(seed):
    return np.random.default_rng(seed).normal(0, 1, (16,) + SHAPE[1:]).astype('f')


def assert_fused(bn, op, attrs):
    assert bn['op'] == op, bn
    assert {k: bn['attrs'][k] for k in attrs} == attrs


def fused_node(qsym):
    (bn,) = [n for n in nodes(qsym) if n['name'] in ('bn', 'quantized_bn')]
    return bn


@pytest.mark.parametrize('act,attrs', ACTIVATIONS, ids=IDS)
@pytest.mark.parametrize('calib_mode', ['naive', 'entropy', 'none'])
@pytest.mark.parametrize('quantize_mode', ['smart', 'full'])
def test_bn_and_fp32_activation_become_one_op(act, attrs, calib_mode, quantize_mode):
    sym = bn_act_after_add(act)
    args, aux = small_nets.random_params(sym, SHAPE)
    calib = data(1)
    kwargs = dict(calib_mode=calib_mode, quantize_mode=quantize_mode)
    qsym, qargs, qaux = quantize(sym, args, aux, calib, **kwargs)
    unfused, _, _ = quantize(sym, args, aux, calib, bn_mode='native', **kwargs)
    # smart: MXNet left the BN fp32; full: MXNet quantized it.
    assert ('quantized_bn' in [n['name'] for n in nodes(unfused)]) == (quantize_mode == 'full')
    assert_fused(fused_node(qsym), '_contrib_quantized_batch_norm_act', attrs)
    left = ops(qsym)
    assert not (ACTIVATION_OPS | {'BatchNorm'}) & set(left), left
    assert left.count('_contrib_dequantize') < ops(unfused).count('_contrib_dequantize')
    x = data(2)[:8]
    (fp32,) = small_nets.forward(sym, args, aux, x)
    (int8,) = small_nets.forward(qsym, qargs, qaux, x)
    assert small_nets.sqnr_db(fp32, int8) > (15 if calib_mode == 'none' else 20)
    if calib_mode != 'none':
        # The range is the quantize's, calibrated on the activation's output.
        relu_out = mx.sym.Group([sym.get_internals()['act_output']])
        (after_act,) = small_nets.forward(relu_out, args, aux, calib[:8])
        if calib_mode == 'naive':
            hi = float(fused_node(qsym)['attrs']['max_calib_range'])
            top = max(after_act.max(), small_nets.forward(relu_out, args, aux, calib[8:])[0].max())
            assert hi == pytest.approx(top, rel=1e-5)


@pytest.mark.parametrize('act,attrs', ACTIVATIONS, ids=IDS)
def test_excluded_bn_and_activation_become_one_op_when_rewritten(act, attrs):
    """MXNet's flow with BatchNorm excluded (bn_mode='fp32'), then the rewrite
    alone: dequantize -> BN -> act -> quantize becomes one op."""
    sym = bn_act_after_add(act)
    args, aux = small_nets.random_params(sym, SHAPE)
    qsym, qargs, qaux = quantize(sym, args, aux, data(1), bn_mode='fp32')
    rewritten = mxnet_bnq.rewrite_quantized_symbol(qsym, qargs, qaux)
    assert_fused(node(rewritten, 'bn'), '_contrib_quantized_batch_norm_act', attrs)
    assert ops(rewritten).count('_contrib_dequantize') == ops(qsym).count('_contrib_dequantize') - 1
    x = data(2)[:8]
    (fp32,) = small_nets.forward(sym, args, aux, x)
    assert small_nets.sqnr_db(fp32, small_nets.forward(rewritten, qargs, qaux, x)[0]) > 20


@pytest.mark.parametrize('act,attrs', ACTIVATIONS, ids=IDS)
def test_float_input_bn_and_activation_become_one_op(act, attrs):
    sym = bn_act_on_input(act)
    args, aux = small_nets.random_params(sym, SHAPE)
    qsym, qargs, qaux = quantize(sym, args, aux, data(1))
    assert_fused(node(qsym, 'bn'), '_contrib_batch_norm_act_quantize', attrs)
    x = data(2)[:8]
    (fp32,) = small_nets.forward(sym, args, aux, x)
    assert small_nets.sqnr_db(fp32, small_nets.forward(qsym, qargs, qaux, x)[0]) > 20


@pytest.mark.parametrize('act,attrs', ACTIVATIONS, ids=IDS)
@pytest.mark.parametrize('calib_mode', ['naive', 'none'])
def test_fused_activation_runs_in_regions_with_the_same_bits(act, attrs, calib_mode):
    sym = bn_act_after_add(act)
    args, aux = small_nets.random_params(sym, SHAPE)
    qsym, qargs, qaux = quantize(sym, args, aux, data(1), calib_mode=calib_mode)
    psym = mxnet_bnq.partition(qsym, qargs, qaux, data_shapes={'data': SHAPE})
    report = mxnet_bnq.region_report(psym)
    left = [n for n in report['left_to_mxnet'] if n['node'] == 'bn']
    if calib_mode == 'none' and attrs.get('a_min') not in (None, '0'):
        assert len(left) == 1 and 'a_min' in left[0]['reason'], report
    else:
        assert not left, report
    x = data(2)[:8]
    expected = run_symbol(qsym, qargs, qaux, x)[0]
    np.testing.assert_array_equal(run_symbol(psym, qargs, qaux, x)[0], expected)


def bn_act_before_reduction(act, reduce=mx.sym.sum, keepdims=False):
    """conv + conv -> BN -> act -> sum (or mean) over H, W -> FC: the BatchNorm
    of the network's tail, before an op MXNet does not quantize."""
    data = mx.sym.var('data')
    s = conv(data, 'conv_a', 8) + conv(data, 'conv_b', 8)
    bn = mx.sym.BatchNorm(s, fix_gamma=False, eps=1e-5, name='bn')
    y = act(bn) if act is not None else bn
    return mx.sym.FullyConnected(reduce(y, axis=(2, 3), keepdims=keepdims, name='mean'),
                                 num_hidden=5, name='fc')


RELU = (lambda x: mx.sym.relu(x, name='act'), {})


@pytest.mark.parametrize('act,attrs', ACTIVATIONS[:3] + [RELU, (None, {})] + CURVES[1:2],
                         ids=IDS[:3] + ['relu', 'none'] + CURVE_IDS[1:2])
@pytest.mark.parametrize('calib_mode', ['naive', 'entropy', 'none'])
def test_bn_before_fp32_ops_is_quantized_with_its_own_range(act, attrs, calib_mode):
    """dequantize -> BN [-> act] -> sum: the BatchNorm (and activation) run
    int8 and the dequantize moves after them; the range is the activation's
    (or BatchNorm's) output range from the same calibration run."""
    sym = bn_act_before_reduction(act)
    args, aux = small_nets.random_params(sym, SHAPE)
    calib = data(1)
    qsym, qargs, qaux = quantize(sym, args, aux, calib, calib_mode=calib_mode)
    unfused, _, _ = quantize(sym, args, aux, calib, calib_mode=calib_mode, bn_mode='fp32')
    bn = node(qsym, 'bn')
    expected_op = ('_contrib_quantized_batch_norm_act' if attrs else
                   '_contrib_quantized_batch_norm_relu' if act is not None else
                   '_contrib_quantized_batch_norm')
    assert_fused(bn, expected_op, attrs)
    left = ops(qsym)
    assert not (ACTIVATION_OPS | {'BatchNorm'}) & set(left), left

    assert round_trips(qsym) <= round_trips(unfused)
    missing = bn['attrs'].get('__bnq_missing_relu_range__')
    assert (missing is not None) == (calib_mode == 'none'), bn['attrs']
    if calib_mode == 'naive':
        name = 'act_output' if act is not None else 'bn_output'
        layer = mx.sym.Group([sym.get_internals()[name]])
        top = max(small_nets.forward(layer, args, aux, c)[0].max() for c in (calib[:8], calib[8:]))
        assert float(bn['attrs']['max_calib_range']) == pytest.approx(top, rel=1e-5)
    x = data(2)[:8]
    (fp32,) = small_nets.forward(sym, args, aux, x)
    (int8,) = small_nets.forward(qsym, qargs, qaux, x)
    assert small_nets.sqnr_db(fp32, int8) > (15 if calib_mode == 'none' else 20)
    # With regions: the same int8 values; the float tail after them may round
    # differently in the last bit (the dequantize's order of operations).
    psym = mxnet_bnq.partition(qsym, qargs, qaux, data_shapes={'data': SHAPE})
    expected = run_symbol(qsym, qargs, qaux, x)[0]
    np.testing.assert_allclose(run_symbol(psym, qargs, qaux, x)[0], expected, rtol=1e-5,
                               atol=1e-6 * np.abs(expected).max())


@pytest.mark.parametrize('act,attrs', ACTIVATIONS[:3] + [RELU], ids=IDS[:3] + ['relu'])
@pytest.mark.parametrize('calib_mode', ['naive', 'entropy', 'none'])
@pytest.mark.parametrize('keepdims', [False, True])
def test_mean_head_becomes_the_pooled_op(act, attrs, calib_mode, keepdims):
    """BN -> act -> mean over H, W (a head written with F.mean) -> FC: one
    BN+act+global average pooling op (then MXNet's int8 flatten, unless
    keepdims), whose range is the quantize's after the mean (calibrated on the
    classifier's input); no dequantize/mean/quantize left between them, and
    closer to fp32 than the BatchNorm left fp32."""
    sym = bn_act_before_reduction(act, mx.sym.mean, keepdims)
    args, aux = small_nets.random_params(sym, SHAPE)
    calib = data(1)
    qsym, qargs, qaux = quantize(sym, args, aux, calib, calib_mode=calib_mode)
    fp32_bn, fargs, faux = quantize(sym, args, aux, calib, calib_mode=calib_mode, bn_mode='fp32')
    bn = node(qsym, 'bn')
    assert_fused(bn, ('_contrib_quantized_batch_norm_act_global_avg_pool' if attrs else
                      '_contrib_quantized_batch_norm_relu_global_avg_pool'), attrs)
    assert bn['attrs']['__bnq_rewrite__'].endswith('mean_head'), bn['attrs']
    left = ops(qsym)
    assert 'mean' not in left, left
    # Uncalibrated, MXNet's FC emits int32: requantize -> dequantize at the output.
    assert left.count('_contrib_dequantize') == (calib_mode == 'none'), left
    assert left.count('_contrib_quantize_v2') == 1, left  # the network input's
    assert ('_contrib_quantized_flatten' in left) != keepdims, left
    assert '__bnq_missing_relu_range__' not in bn['attrs']
    if calib_mode == 'naive':
        layer = mx.sym.Group([sym.get_internals()['mean_output']])
        outs = [small_nets.forward(layer, args, aux, c)[0] for c in (calib[:8], calib[8:])]
        assert float(bn['attrs']['max_calib_range']) == pytest.approx(
            max(o.max() for o in outs), rel=1e-5)
    elif calib_mode == 'none':
        assert 'max_calib_range' not in bn['attrs']
    x = data(2)[:8]
    (fp32,) = small_nets.forward(sym, args, aux, x)
    (int8,) = small_nets.forward(qsym, qargs, qaux, x)
    (with_fp32_bn,) = small_nets.forward(fp32_bn, fargs, faux, x)
    if calib_mode != 'none':
        assert small_nets.sqnr_db(fp32, int8) > small_nets.sqnr_db(fp32, with_fp32_bn) - 0.5
    assert small_nets.sqnr_db(fp32, int8) > (15 if calib_mode == 'none' else 20)
    # With regions: the same int8 values; the float FC output may differ in
    # the last bit (oneDNN 3.2 inside the region, MXNet's 2.4 outside).
    psym = mxnet_bnq.partition(qsym, qargs, qaux, data_shapes={'data': SHAPE})
    expected = run_symbol(qsym, qargs, qaux, x)[0]
    np.testing.assert_allclose(run_symbol(psym, qargs, qaux, x)[0], expected, rtol=1e-5,
                               atol=1e-6 * np.abs(expected).max())


def bn_act_head_on_fp32_data(act, source):
    """BN -> act -> mean -> FC on fp32 data: with source 'pooled_concat' conv,
    conv -> Concat -> average Pooling (smart mode leaves the concat, the
    pooling and the head fp32), with 'input' the network's input."""
    data = mx.sym.var('data')
    x = data
    if source == 'pooled_concat':
        c = mx.sym.concat(conv(data, 'conv_a', 8), conv(data, 'conv_b', 4), dim=1, name='concat')
        x = mx.sym.Pooling(c, kernel=(2, 2), stride=(2, 2), pool_type='avg', name='pool')
    bn = mx.sym.BatchNorm(x, fix_gamma=False, eps=1e-5, name='bn')
    return mx.sym.FullyConnected(mx.sym.mean(act(bn), axis=(2, 3), name='mean'),
                                 num_hidden=5, name='fc')


@pytest.mark.parametrize('act,attrs', ACTIVATIONS[:3] + [RELU], ids=IDS[:3] + ['relu'])
@pytest.mark.parametrize('calib_mode', ['naive', 'none'])
@pytest.mark.parametrize('source', ['input', 'pooled_concat'])
def test_mean_head_on_fp32_data_becomes_one_op(act, attrs, calib_mode, source):
    """A head whose BatchNorm reads fp32 data (the network's input):
    calibrated, one op from the fp32 values to the pooled int8 (the mean of
    the exact BN+act values, in the range calibrated on the mean: the graph
    with the BatchNorm left fp32, rounded the same once); uncalibrated, the
    input is quantized at run time for the quantized pooled op.  After an
    fp32 average pooling of an fp32 concat of dequantized tensors, the head
    reads the concat's quantized parts instead, each pooled in its own range.
    No BatchNorm, activation or mean left, no more quantize/dequantize nodes,
    and the same values inside regions."""
    sym = bn_act_head_on_fp32_data(act, source)
    args, aux = small_nets.random_params(sym, SHAPE)
    calib = data(1)
    qsym, qargs, qaux = quantize(sym, args, aux, calib, calib_mode=calib_mode)
    fp32_bn, fargs, faux = quantize(sym, args, aux, calib, calib_mode=calib_mode, bn_mode='fp32')
    bn = node(qsym, 'bn')
    if source == 'pooled_concat':
        expected_op = mxnet_bnq.names.QUANTIZED_CONCAT_AVG_POOL_BATCH_NORM_POOL
        expected_attrs = dict(attrs or {'act_type': 'relu'})
    elif calib_mode == 'naive':
        expected_op = '_contrib_batch_norm_act_global_avg_pool_quantize'
        expected_attrs = dict(attrs or {'act_type': 'relu'})
    else:
        expected_op = ('_contrib_quantized_batch_norm_act_global_avg_pool' if attrs else
                       '_contrib_quantized_batch_norm_relu_global_avg_pool')
        expected_attrs = attrs
    assert_fused(bn, expected_op, expected_attrs)
    assert bn['attrs']['__bnq_rewrite__'].endswith('mean_head'), bn['attrs']
    left = ops(qsym)
    assert not (ACTIVATION_OPS | {'BatchNorm', 'mean'}) & set(left), left

    assert round_trips(qsym) <= round_trips(fp32_bn), (left, ops(fp32_bn))
    x = data(2)[:8]
    (fp32,) = small_nets.forward(sym, args, aux, x)
    (int8,) = small_nets.forward(qsym, qargs, qaux, x)
    (with_fp32_bn,) = small_nets.forward(fp32_bn, fargs, faux, x)
    if calib_mode == 'naive':
        assert small_nets.sqnr_db(fp32, int8) >= small_nets.sqnr_db(fp32, with_fp32_bn) - 0.05
    assert small_nets.sqnr_db(fp32, int8) > (15 if calib_mode == 'none' else 20)
    psym = mxnet_bnq.partition(qsym, qargs, qaux, data_shapes={'data': SHAPE})
    left = [n for n in mxnet_bnq.region_report(psym)['left_to_mxnet'] if n['node'] == 'bn']
    if calib_mode == 'none' and attrs.get('a_min') not in (None, '0'):
        assert len(left) == 1 and 'a_min' in left[0]['reason'], left
    else:
        assert not left, left
    expected = run_symbol(qsym, qargs, qaux, x)[0]
    np.testing.assert_allclose(run_symbol(psym, qargs, qaux, x)[0], expected, rtol=1e-5,
                               atol=1e-6 * np.abs(expected).max())


def global_avg_pool(x, axis, keepdims, name):
    """gluon's GlobalAvgPool2D, as the reduction of bn_act_before_reduction."""
    del axis, keepdims  # over H and W, keeping them as 1
    return mx.sym.Pooling(x, kernel=(1, 1), global_pool=True, pool_type='avg', name=name)


@pytest.mark.parametrize('act,attrs', ACTIVATIONS[:3] + [RELU], ids=IDS[:3] + ['relu'])
def test_fp32_global_avg_pooling_head_becomes_the_pooled_op(act, attrs):
    """A GlobalAvgPool2D head is one pooled op, no flatten: whether smart
    mode left it fp32 (its BatchNorm was fp32 then: the same head as F.mean)
    or quantized it (after MXNet's own quantized BN and ReLU)."""
    sym = bn_act_before_reduction(act, global_avg_pool)
    args, aux = small_nets.random_params(sym, SHAPE)
    qsym, qargs, qaux = quantize(sym, args, aux, data(1))
    bn = fused_node(qsym)
    assert_fused(bn, ('_contrib_quantized_batch_norm_act_global_avg_pool' if attrs else
                      '_contrib_quantized_batch_norm_relu_global_avg_pool'), attrs)
    left = ops(qsym)
    assert 'Pooling' not in left and '_contrib_quantized_flatten' not in left, left
    assert left.count('_contrib_quantize_v2') == 1 and '_contrib_dequantize' not in left, left
    x = data(2)[:8]
    (fp32,) = small_nets.forward(sym, args, aux, x)
    assert small_nets.sqnr_db(fp32, small_nets.forward(qsym, qargs, qaux, x)[0]) > 20


@pytest.mark.parametrize('act,attrs', CURVES, ids=CURVE_IDS)
def test_mean_after_a_curve_stays_fp32(act, attrs):
    """The pooled op averages in levels, which a curve does not allow: BN +
    curve becomes one op, and the mean after it stays fp32."""
    sym = bn_act_before_reduction(act, mx.sym.mean)
    args, aux = small_nets.random_params(sym, SHAPE)
    qsym, qargs, qaux = quantize(sym, args, aux, data(1))
    assert_fused(node(qsym, 'bn'), '_contrib_quantized_batch_norm_act', attrs)
    assert 'mean' in ops(qsym)
    x = data(2)[:8]
    (fp32,) = small_nets.forward(sym, args, aux, x)
    assert small_nets.sqnr_db(fp32, small_nets.forward(qsym, qargs, qaux, x)[0]) > 20


@pytest.mark.parametrize('spelling,act_type', [
    (lambda x: mx.sym.Activation(x, act_type='sigmoid', name='act'), 'sigmoid'),
    (lambda x: mx.sym.tanh(x, name='act'), 'tanh'),
])
def test_other_spellings_of_the_curves_are_fused(spelling, act_type):
    sym = bn_act_after_add(spelling)
    args, aux = small_nets.random_params(sym, SHAPE)
    qsym, _, _ = quantize(sym, args, aux, data(1))
    assert_fused(fused_node(qsym), '_contrib_quantized_batch_norm_act', {'act_type': act_type})
    assert not ACTIVATION_OPS & set(ops(qsym)), ops(qsym)


def pool_bn_act(pool_type, act, kernel=2, convention='valid'):
    """conv -> ReLU -> pooling -> BN -> act -> conv: MXNet's smart mode leaves
    the pooling and the BatchNorm fp32 (dequantize -> Pooling -> BatchNorm)."""
    data = mx.sym.var('data')
    r = mx.sym.Activation(conv(data, 'conv_a', 8), act_type='relu', name='relu')
    p = mx.sym.Pooling(r, kernel=(kernel, kernel), stride=(2, 2), pool_type=pool_type,
                       pooling_convention=convention, name='pool')
    bn = mx.sym.BatchNorm(p, fix_gamma=False, eps=1e-5, name='bn')
    return mx.sym.Flatten(conv(act(bn), 'conv_c', 4, kernel=1), name='flat')


@pytest.mark.parametrize('pool_type', ['max', 'avg'])
@pytest.mark.parametrize('calib_mode', ['naive', 'none'])
def test_pooling_before_a_batchnorm_is_quantized_exactly(pool_type, calib_mode):
    """Max pooling commutes with quantization: it becomes MXNet's int8 op and
    the BatchNorm reads int8.  An average pooling the BatchNorm takes in
    (_contrib_quantized_avg_pool_batch_norm): it reads the exact mean of the
    int8 input, rounded once with the BatchNorm, as fp32 BatchNorm would,
    where MXNet's int8 average pooling would round the mean first (and
    calibrated, the pooling was left fp32 behind a dequantize)."""
    act, attrs = ACTIVATIONS[2]  # leaky 0.1
    sym = pool_bn_act(pool_type, act)
    args, aux = small_nets.random_params(sym, SHAPE)
    calib = data(1)
    qsym, qargs, qaux = quantize(sym, args, aux, calib, calib_mode=calib_mode)
    left = ops(qsym)
    assert 'BatchNorm' not in left and 'LeakyReLU' not in left, left
    assert 'Pooling' not in left and left.count('_contrib_dequantize') <= 1, left  # the output's
    if pool_type == 'max':
        assert '_contrib_quantized_pooling' in left, left
        assert_fused(node(qsym, 'bn'), '_contrib_quantized_batch_norm_act', attrs)
    else:
        assert not {'_contrib_quantized_pooling', mxnet_bnq.names.QUANTIZED_AVG_POOLING} & set(left)
        bn = node(qsym, 'bn')
        assert_fused(bn, mxnet_bnq.names.QUANTIZED_AVG_POOL_BATCH_NORM,
                     dict(attrs, pool_type='avg', kernel='(2, 2)', stride='(2, 2)'))
    if calib_mode == 'naive':
        fp32_bn, fargs, faux = quantize(sym, args, aux, calib, bn_mode='fp32')
        x = data(2)[:8]
        (fp32,) = small_nets.forward(sym, args, aux, x)
        (int8,) = small_nets.forward(qsym, qargs, qaux, x)
        (with_fp32_bn,) = small_nets.forward(fp32_bn, fargs, faux, x)
        assert small_nets.sqnr_db(fp32, int8) >= small_nets.sqnr_db(fp32, with_fp32_bn) - 0.05
    psym = mxnet_bnq.partition(qsym, qargs, qaux, data_shapes={'data': SHAPE})
    # Only the fp32 Flatten of the output stays with MXNet.
    assert [n['node'] for n in mxnet_bnq.region_report(psym)['left_to_mxnet']] == ['flat']
    x = data(2)[:8]
    expected = run_symbol(qsym, qargs, qaux, x)[0]  # the float output may differ in its last bit
    np.testing.assert_allclose(run_symbol(psym, qargs, qaux, x)[0], expected, rtol=1e-5,
                               atol=1e-6 * np.abs(expected).max())


def pool_bn_act_head(act, head):
    """conv -> ReLU -> avg pooling -> BN -> act -> global average pooling (or
    a mean over H and W) -> FC: a head after an average pooling."""
    data = mx.sym.var('data')
    r = mx.sym.Activation(conv(data, 'conv_a', 8), act_type='relu', name='relu')
    p = mx.sym.Pooling(r, kernel=(2, 2), stride=(2, 2), pool_type='avg', name='pool')
    y = act(mx.sym.BatchNorm(p, fix_gamma=False, eps=1e-5, name='bn'))
    if head == 'pool':
        y = mx.sym.Pooling(y, kernel=(1, 1), global_pool=True, pool_type='avg', name='head')
    else:
        y = mx.sym.mean(y, axis=(2, 3), keepdims=True, name='head')
    return mx.sym.FullyConnected(mx.sym.Flatten(y, name='flat'), num_hidden=5, name='fc')


@pytest.mark.parametrize('head', ['pool', 'mean'])
@pytest.mark.parametrize('calib_mode', ['naive', 'none'])
def test_average_pooling_before_a_head_is_pooled_with_it(head, calib_mode):
    """The head BatchNorm + act + mean takes the average pooling before it in
    (_contrib_quantized_avg_pool_batch_norm_global_avg_pool): the mean of the
    BN+act values of the exact window means, rounded once, where the int8
    pooling would round the window means first.  Regions run it too."""
    act, attrs = ACTIVATIONS[2]  # leaky 0.1
    sym = pool_bn_act_head(act, head)
    args, aux = small_nets.random_params(sym, SHAPE)
    calib = data(1)
    # quantize_mode='full': smart mode leaves a network's last layers fp32.
    qsym, qargs, qaux = quantize(sym, args, aux, calib, calib_mode=calib_mode,
                                 quantize_mode='full')
    left = ops(qsym)
    assert not {'BatchNorm', 'LeakyReLU', 'Pooling', 'mean', '_contrib_quantized_pooling',
                mxnet_bnq.names.QUANTIZED_AVG_POOLING} & set(left), left
    # Uncalibrated, the classifier's int32 output is dequantized at the end.
    assert left.count('_contrib_quantize_v2') == 1, left
    assert left.count('_contrib_dequantize') == (calib_mode == 'none'), left
    (bn,) = [n for n in nodes(qsym) if 'batch_norm' in n['op']]
    assert_fused(bn, mxnet_bnq.names.QUANTIZED_AVG_POOL_BATCH_NORM_POOL,
                 dict(attrs, pool_type='avg', kernel='(2, 2)', stride='(2, 2)'))
    x = data(2)
    if calib_mode == 'naive':
        # At the head's output (the classifier's input) on every CPU, and at
        # the logits where the int8 classifier is exact: without VNNI its
        # arithmetic (halved weights, the same in both graphs) moved the
        # logits 0.12 dB below the fp32-BN graph's (41.90 against 42.03 dB on
        # an AVX2 EPYC), while the head's output was 0.29 dB above.
        outputs = [sym.get_internals()['flat_output']] + ([sym] if int8_arithmetic.EXACT else [])
        for out in outputs:
            oargs = {k: v for k, v in args.items() if k in out.list_arguments()}
            int8 = quantize(out, oargs, aux, calib, quantize_mode='full')
            fp32_bn = quantize(out, oargs, aux, calib, bn_mode='fp32', quantize_mode='full')
            (fp32,) = small_nets.forward(out, oargs, aux, x)
            ours, theirs = (small_nets.sqnr_db(fp32, small_nets.forward(*q, x)[0])
                            for q in (int8, fp32_bn))
            assert ours >= theirs - 0.05, (out.name, ours, theirs)
    psym = mxnet_bnq.partition(qsym, qargs, qaux, data_shapes={'data': SHAPE})
    # Uncalibrated, the classifier stays with MXNet (its int32 output range).
    left_ops = [n['op'] for n in mxnet_bnq.region_report(psym)['left_to_mxnet']]
    assert left_ops == ([] if calib_mode == 'naive' else ['_sg_mkldnn_fully_connected'])
    # The float output may differ in its last bit.
    expected = run_symbol(qsym, qargs, qaux, x[:8])[0]
    np.testing.assert_allclose(run_symbol(psym, qargs, qaux, x[:8])[0], expected, rtol=1e-5,
                               atol=1e-6 * np.abs(expected).max())


@pytest.mark.parametrize('convention', ['valid', 'full'])
def test_an_fp32_full_convention_average_pooling_is_not_taken_in(convention):
    """3x3 windows, stride 2, on 8x8: the full convention adds edge windows,
    which MXNet's fp32 pooling averages over the values inside and oneDNN
    over the padded window: that pooling stays fp32 (the BatchNorm reads its
    exact mean, the float-input op); the valid one goes into the BatchNorm."""
    act, attrs = ACTIVATIONS[2]  # leaky 0.1
    sym = pool_bn_act('avg', act, kernel=3, convention=convention)
    args, aux = small_nets.random_params(sym, SHAPE)
    calib = data(1)
    qsym, qargs, qaux = quantize(sym, args, aux, calib)
    bn = node(qsym, 'bn')
    if convention == 'full':
        assert_fused(bn, '_contrib_batch_norm_act_quantize', attrs)
        assert 'Pooling' in ops(qsym)
    else:
        assert_fused(bn, mxnet_bnq.names.QUANTIZED_AVG_POOL_BATCH_NORM, attrs)
    fp32_bn, fargs, faux = quantize(sym, args, aux, calib, bn_mode='fp32')
    x = data(2)[:8]
    (fp32,) = small_nets.forward(sym, args, aux, x)
    (int8,) = small_nets.forward(qsym, qargs, qaux, x)
    (with_fp32_bn,) = small_nets.forward(fp32_bn, fargs, faux, x)
    assert small_nets.sqnr_db(fp32, int8) >= small_nets.sqnr_db(fp32, with_fp32_bn) - 0.05


def test_report_gives_every_activation_its_fate():
    """mxnet_bnq.report has a row per activation: folded into MXNet's conv,
    fused into a BatchNorm op, quantized by MXNet, or left fp32 with why."""
    x = mx.sym.var('data')
    folded = mx.sym.Activation(mx.sym.BatchNorm(conv(x, 'conv_a', 8), name='bn_a'),
                               act_type='relu', name='relu_a')
    pooled = mx.sym.Pooling(folded, kernel=(2, 2), stride=(2, 2), pool_type='max', name='pool')
    by_mxnet = mx.sym.Activation(pooled, act_type='relu', name='relu_p')
    s = conv(by_mxnet, 'conv_b', 8) + conv(by_mxnet, 'conv_c', 8)
    curve = mx.sym.Activation(mx.sym.BatchNorm(s, fix_gamma=False, name='bn_t'), act_type='tanh',
                              name='tanh_t')
    sym = mx.sym.sigmoid(conv(curve, 'conv_d', 4, kernel=1), name='sigmoid_out')
    args, aux = small_nets.random_params(sym, SHAPE)
    qsym, _, _ = quantize(sym, args, aux, data(1))
    rows = {r['layer']: r for r in mxnet_bnq.report(sym, qsym) if r['kind'] == 'activation'}
    assert set(rows) == {'relu_a', 'relu_p', 'tanh_t', 'sigmoid_out'}, rows
    assert rows['relu_a']['fate'] == 'folded into _sg_mkldnn_conv', rows['relu_a']
    assert rows['relu_p']['fate'] == 'quantized by MXNet', rows['relu_p']
    assert rows['relu_p']['detail'] == '_contrib_quantized_act'
    assert rows['tanh_t']['fate'] == 'fused into _contrib_quantized_batch_norm_act', rows['tanh_t']
    assert rows['sigmoid_out']['fate'] == 'fp32', rows['sigmoid_out']
    assert 'MXNet quantizes no sigmoid' in rows['sigmoid_out']['detail']
    text = mxnet_bnq.format_report(mxnet_bnq.report(sym, qsym))
    assert '| tanh_t | fused into _contrib_quantized_batch_norm_act |' in text
