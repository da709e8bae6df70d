"""Int8 regions (the BNQ_REGIONS partitioner and the region op) against
MXNet's own ops and against the numpy reference of MXNet's quantized
convolution (conv_reference.py)."""
import json
import os
import re
import subprocess
import sys

import conv_reference as cref
import graph_probe
import int8_arithmetic
import mxnet as mx
import numpy as np
import pytest
import small_nets
from conv_reference import F
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import mxnet_bnq
from mxnet_bnq.graph_runner import run_symbol


def quantize(sym, shape, seed=0, nonnegative=False, calib_mode='naive',
             granularity='tensor-wise', quantize_mode='smart'):
    """Our flow without regions (MXNet's flow plus the BatchNorm pass)."""
    args, aux = small_nets.random_params(sym, shape, seed)
    rng = np.random.default_rng(seed + 1)
    size = (8,) + shape[1:]
    calib = rng.uniform(0, 1, size) if nonnegative else rng.normal(0, 1, size)
    calib = calib.astype('f')
    qsym, qargs, qaux = mxnet_bnq.quantize_model_mkldnn(
        sym, args, aux, calib_mode=calib_mode, label_names=None, quantized_dtype='auto',
        calib_data=mx.io.NDArrayIter(calib, batch_size=8), num_calib_examples=8, regions=False,
        quantize_granularity=granularity, quantize_mode=quantize_mode)
    return qsym, qargs, qaux


def region_ops(psym):
    """{region node: [op, ...]} of a partitioned symbol."""
    return {n['name']: [m['op'] for m in n['subgraphs'][0]['nodes'] if m['op'] != 'null']
            for n in json.loads(psym.tojson())['nodes'] if n['op'] == '_bnq_quantized_region'}


def output_steps(qsym, qargs, qaux, x):
    """Real value of one step of each quantized tensor the graph dequantizes at its outputs."""
    nodes = json.loads(qsym.tojson())['nodes']
    internals = qsym.get_internals()
    names = internals.list_outputs()
    steps = []
    for head in json.loads(qsym.tojson())['heads']:
        node = nodes[head[0]]
        if node['op'] != '_contrib_dequantize':
            continue
        producer = nodes[node['inputs'][0][0]]
        outs = [n for n in names if n.startswith(producer['name'] + '_')]
        lo, hi = run_symbol(mx.sym.Group([internals[outs[node['inputs'][1][1]]],
                                          internals[outs[node['inputs'][2][1]]]]),
                            qargs, qaux, x)
        dtype_range = 127.5 if '_act' not in producer['name'] else 255.5
        steps.append(max(abs(float(lo[0])), abs(float(hi[0]))) / dtype_range)
    return steps


def assert_within_one_lsb(expected, got, step):
    """At most one quantization step apart in at most 0.01% of the elements (at least one)."""
    diff = np.abs(np.asarray(expected, np.float64) - np.asarray(got, np.float64))
    off = diff > step * 1e-3
    assert diff.max() <= step * 1.001, (diff.max(), step)
    assert off.sum() <= max(1, 1e-4 * off.size), (off.sum(), off.size)


def partitioned(sym, shape, seed=0, nonnegative=False, claimed=None, calib_mode='naive',
                granularity='tensor-wise', quantize_mode='smart'):
    """(qsym, psym, qargs, qaux, x): quantized, partitioned, and a test batch.
    quantize_mode='full' quantizes the ops at the graph's end too (smart mode
    leaves them fp32), so that their int8 results are region outputs."""
    qsym, qargs, qaux = quantize(sym, shape, seed, nonnegative, calib_mode, granularity,
                                 quantize_mode)
    psym = mxnet_bnq.partition(qsym, qargs, qaux, data_shapes={'data': shape})
    regions = region_ops(psym)
    for op in claimed or []:
        assert any(op in ops for ops in regions.values()), (op, regions)
    rng = np.random.default_rng(seed + 2)
    x = (rng.uniform(0, 1, shape) if nonnegative else rng.normal(0, 1, shape)).astype('f')
    return qsym, psym, qargs, qaux, x


def compare_with_mxnet(sym, shape, seed=0, nonnegative=False, claimed=None, calib_mode='naive',
                       granularity='tensor-wise'):
    qsym, psym, qargs, qaux, x = partitioned(sym, shape, seed, nonnegative, claimed, calib_mode,
                                             granularity)
    expected = run_symbol(qsym, qargs, qaux, x)
    got = run_symbol(psym, qargs, qaux, x)
    steps = output_steps(qsym, qargs, qaux, x)
    for i, (e, g) in enumerate(zip(expected, got)):
        assert e.shape == g.shape and e.dtype == g.dtype
        if i < len(steps):
            assert_within_one_lsb(e, g, steps[i])
        else:  # float output (fully connected): float rounding only
            np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5 * np.abs(e).max())
    return qsym, psym, qargs, qaux


def conv(x, name, num_filter, kernel, stride=(1, 1), pad=(0, 0), dilate=(1, 1), num_group=1,
         no_bias=False):
    return mx.sym.Convolution(x, num_filter=num_filter, kernel=kernel, stride=stride, pad=pad,
                              dilate=dilate, num_group=num_group, no_bias=no_bias, name=name)


conv_cases = st.fixed_dictionaries({
    'in_ch': st.sampled_from([3, 5, 8, 17]),
    'out_ch': st.sampled_from([4, 7, 16, 33]),
    'group': st.sampled_from(['one', 'two', 'depthwise']),
    'kernel': st.tuples(st.sampled_from([1, 3, 5]), st.sampled_from([1, 3])),
    'stride': st.tuples(st.integers(1, 3), st.integers(1, 2)),
    'pad': st.tuples(st.integers(0, 2), st.integers(0, 1)),
    'dilate': st.tuples(st.integers(1, 2), st.integers(1, 2)),
    'hw': st.tuples(st.sampled_from([7, 9, 13]), st.sampled_from([8, 11])),
    'batch': st.integers(1, 2),
    'no_bias': st.booleans(),
    'bn': st.booleans(),
    'act': st.sampled_from(['none', 'relu', 'leaky', 'relu6']),
    'sum': st.booleans(),
    'postsum_act': st.booleans(),
    'uint8_input': st.booleans(),
})


def conv_graph(c):
    in_ch, out_ch = c['in_ch'], c['out_ch']
    groups = {'one': 1, 'two': 2, 'depthwise': in_ch}[c['group']]
    if c['group'] == 'two':
        in_ch, out_ch = 2 * in_ch, 2 * out_ch
    if c['group'] == 'depthwise':
        out_ch = in_ch
    data = mx.sym.var('data')
    geometry = dict(kernel=c['kernel'], stride=c['stride'], pad=c['pad'], dilate=c['dilate'])
    y = conv(data, 'conv', out_ch, num_group=groups, no_bias=c['no_bias'], **geometry)
    if c['bn']:
        y = mx.sym.BatchNorm(y, fix_gamma=False, eps=1e-5, name='bn')
    if c['act'] == 'relu':
        y = mx.sym.Activation(y, act_type='relu', name='relu')
    elif c['act'] == 'leaky':
        y = mx.sym.LeakyReLU(y, act_type='leaky', slope=0.1, name='leaky')
    elif c['act'] == 'relu6':
        y = mx.sym.clip(y, 0, 6, name='relu6')
    if c['sum']:
        y = y + conv(data, 'side', out_ch, **geometry)
        if c['postsum_act']:
            y = mx.sym.Activation(y, act_type='relu', name='relu2')
    return y, (c['batch'], in_ch) + c['hw']


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(conv_cases)
def test_convolution_in_region_matches_mxnet(case):
    sym, shape = conv_graph(case)
    extent = [d * (k - 1) + 1 for d, k in zip(case['dilate'], case['kernel'])]
    if any(h + 2 * p < e for h, p, e in zip(case['hw'], case['pad'], extent)):
        return  # no output pixel: MXNet refuses the shape
    qsym, psym, qargs, qaux, x = partitioned(sym, shape, nonnegative=case['uint8_input'],
                                             claimed=['_sg_mkldnn_conv'])
    g = graph_probe.graph(qsym)
    (head,) = g['heads']
    dequantize = g['nodes'][head[0]]
    assert dequantize['op'] == '_contrib_dequantize'
    reference, step, mxnet_right = graph_probe.fused_conv_reference(
        qsym, qargs, qaux, x, dequantize['inputs'][0][0])
    (got,) = run_symbol(psym, qargs, qaux, x)
    if int8_arithmetic.EXACT:
        assert_within_one_lsb(reference.astype(np.float64) * step, got, step)
    if mxnet_right and not mxnet_crashes(case):
        (expected,) = run_symbol(qsym, qargs, qaux, x)
        assert_within_one_lsb(expected, got, step)


@settings(max_examples=30, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(conv_cases)
def test_uncalibrated_convolution_in_region_matches_mxnet(case):
    """calib_mode='none': quantize_v2 measures the input's range at each
    forward, the convolution gives int32 (with MXNet's bias and range for that
    input range), requantize measures the int32 data's range."""
    sym, shape = conv_graph(case)
    extent = [d * (k - 1) + 1 for d, k in zip(case['dilate'], case['kernel'])]
    if any(h + 2 * p < e for h, p, e in zip(case['hw'], case['pad'], extent)):
        return  # no output pixel: MXNet refuses the shape
    if mxnet_crashes(case):
        return
    claimed = [] if case['act'] == 'relu6' else ['_sg_mkldnn_conv', '_contrib_requantize',
                                                 '_contrib_quantize_v2']
    _, psym, _, _ = compare_with_mxnet(sym, shape, nonnegative=case['uint8_input'],
                                       claimed=claimed, calib_mode='none')
    if case['act'] == 'relu6':  # MXNet drops the clip of an int32 output: left to it
        reasons = [n['reason'] for n in mxnet_bnq.region_report(psym)['left_to_mxnet']]
        assert any('drops the clip' in r for r in reasons), reasons


@pytest.mark.skipif(not int8_arithmetic.EXACT, reason=int8_arithmetic.WHY_NOT_EXACT)
@pytest.mark.parametrize('relu', [False, True])
@pytest.mark.parametrize('seed', [0, 1])
def test_uncalibrated_convolution_in_region_matches_numpy_reference(relu, seed):
    """quantize (measured) -> conv (int32) -> requantize (measured) ->
    dequantize, against conv_reference's formulas, at two input scales."""
    data = mx.sym.var('data')
    y = conv(data, 'conv', 7, (3, 3), stride=(2, 1), pad=(1, 0))
    if relu:
        y = mx.sym.Activation(y, act_type='relu', name='relu')
    shape = (2, 5, 9, 8)
    qsym, psym, qargs, qaux, x = partitioned(y, shape, seed=seed, calib_mode='none',
                                             claimed=['_contrib_requantize'])
    for scale in (1.0, 4.0):
        xs = (x * scale).astype('f')
        q_in, in_range = cref.quantize_measured(xs)
        acc, acc_range = cref.uncalibrated_conv(q_in, in_range, qargs['conv_weight'].asnumpy(),
                                                qargs['conv_bias'].asnumpy(), stride=(2, 1),
                                                pad=(1, 0), relu=relu)
        q_out, (_, real) = cref.requantize_measured(acc, acc_range)
        step = float(real) / 127.5  # dequantize's step
        (got,) = run_symbol(psym, qargs, qaux, xs)
        assert_within_one_lsb(q_out.astype(np.float64) * step, got, step)


def mxnet_crashes(case):
    """Stock MXNet 1.9.1 (no plugin) dies with a segmentation fault running a
    quantized conv+sum+relu with a non-square kernel (e.g. 1x3)."""
    return case['sum'] and case['postsum_act'] and case['kernel'][0] != case['kernel'][1]


@pytest.mark.parametrize('pool', [
    dict(pool_type='max', kernel=(3, 3), stride=(2, 2), pad=(1, 1)),
    dict(pool_type='max', kernel=(2, 2), stride=(2, 2), pooling_convention='full'),
    dict(pool_type='avg', kernel=(3, 3), stride=(2, 2), pad=(1, 1)),
    dict(pool_type='avg', kernel=(3, 3), stride=(1, 1), pad=(1, 1), count_include_pad=False),
    dict(pool_type='avg', kernel=(2, 2), stride=(2, 2), pooling_convention='full'),
    dict(pool_type='avg', kernel=(1, 1), global_pool=True),
    dict(pool_type='max', kernel=(1, 1), global_pool=True),
])
@pytest.mark.parametrize('act', [False, True])
@pytest.mark.parametrize('calib_mode', ['naive', 'none'])
def test_pooling_in_region_matches_mxnet(pool, act, calib_mode):
    data = mx.sym.var('data')
    y = conv(data, 'conv', 6, (3, 3), pad=(1, 1))
    if act:
        y = mx.sym.Activation(y, act_type='relu', name='relu')
    y = mx.sym.Pooling(y, name='pool', **pool)
    y = conv(y, 'after', 5, (1, 1))
    # Our flow makes an average pooling the plugin's (the mean in its own range).
    op = '_contrib_quantized_pooling' if pool['pool_type'] == 'max' else \
        mxnet_bnq.names.QUANTIZED_AVG_POOLING
    compare_with_mxnet(y, (2, 3, 11, 9), claimed=[op], calib_mode=calib_mode)


max_pool_cases = st.fixed_dictionaries({
    'channels': st.sampled_from([1, 5, 31, 33, 64, 65, 130]),
    'kernel': st.tuples(st.integers(1, 3), st.integers(1, 3)),
    'stride': st.tuples(st.integers(1, 3), st.integers(1, 2)),
    'pad': st.tuples(st.integers(0, 2), st.integers(0, 1)),
    'full': st.booleans(),
    'hw': st.tuples(st.sampled_from([5, 8, 13]), st.sampled_from([6, 9])),
    'batch': st.integers(1, 2),
    'relu': st.booleans(),  # uint8 data, else int8
})


@settings(max_examples=40, suppress_health_check=[HealthCheck.too_slow])
@given(max_pool_cases)
def test_max_pooling_in_region_matches_mxnet(case):
    """Max pooling of a convolution's (channels-last) output, which regions run
    with their own kernel: MXNet's result for any window, channel count (64-byte
    vectors and their tails) and type."""
    pad = tuple(min(p, k - 1) for p, k in zip(case['pad'], case['kernel']))
    for size, k, s, p in zip(case['hw'], case['kernel'], case['stride'], pad):
        span = size + 2 * p - k
        outs = (-(-span // s) if case['full'] else span // s) + 1
        # 'full' can add a window wholly in the padding: MXNet's fp32 pooling
        # makes it -inf there, and no calibration survives that.
        assume((outs - 1) * s - p < size)
    data = mx.sym.var('data')
    y = conv(data, 'conv', case['channels'], (3, 3), pad=(1, 1))
    if case['relu']:
        y = mx.sym.Activation(y, act_type='relu', name='relu')
    y = mx.sym.Pooling(y, name='pool', pool_type='max', kernel=case['kernel'],
                       stride=case['stride'], pad=pad,
                       pooling_convention='full' if case['full'] else 'valid')
    y = conv(y, 'after', 4, (1, 1))
    compare_with_mxnet(y, (case['batch'], 3) + case['hw'], claimed=['_contrib_quantized_pooling'])


def max_pool_reference(x, kernel, stride, pad, out_hw):
    """Numpy max pooling of NCHW data: each window's maximum over its positions
    inside the input (the padding never takes part)."""
    out = np.empty(x.shape[:2] + tuple(out_hw), x.dtype)
    for oh in range(out_hw[0]):
        h0 = oh * stride[0] - pad[0]
        for ow in range(out_hw[1]):
            w0 = ow * stride[1] - pad[1]
            window = x[:, :, max(h0, 0):h0 + kernel[0], max(w0, 0):w0 + kernel[1]]
            out[:, :, oh, ow] = window.max(axis=(2, 3))
    return out


@settings(max_examples=15, suppress_health_check=[HealthCheck.too_slow])
@given(max_pool_cases)
def test_max_pooling_in_region_matches_numpy(case):
    """The region's max pooling of its own convolution's output is the numpy
    maximum of each window, exactly: the convolution's output is a second
    region output (through a flatten, dequantized with the scale the pooling
    shares; quantize_mode='full' so MXNet quantizes the flatten and the pooling
    at the graph's end)."""
    pad = tuple(min(p, k - 1) for p, k in zip(case['pad'], case['kernel']))
    for size, k, s, p in zip(case['hw'], case['kernel'], case['stride'], pad):
        span = size + 2 * p - k
        outs = (-(-span // s) if case['full'] else span // s) + 1
        assume((outs - 1) * s - p < size)
    y = conv(mx.sym.var('data'), 'conv', case['channels'], (3, 3), pad=(1, 1))
    if case['relu']:
        y = mx.sym.Activation(y, act_type='relu', name='relu')
    pool = mx.sym.Pooling(y, name='pool', pool_type='max', kernel=case['kernel'],
                          stride=case['stride'], pad=pad,
                          pooling_convention='full' if case['full'] else 'valid')
    shape = (case['batch'], 3) + case['hw']
    _, psym, qargs, qaux, x = partitioned(mx.sym.Group([mx.sym.Flatten(y, name='flat'), pool]),
                                          shape, quantize_mode='full')
    (ops,) = region_ops(psym).values()
    assert {'_contrib_quantized_flatten', '_contrib_quantized_pooling'} <= set(ops), ops
    features, got = run_symbol(psym, qargs, qaux, x)
    features = features.reshape(shape[:1] + (case['channels'],) + shape[2:])
    expected = max_pool_reference(features, case['kernel'], case['stride'], pad, got.shape[2:])
    np.testing.assert_array_equal(got, expected)


def fresh_process_output(lines, **env):
    """stdout and stderr (oneDNN's verbose lines, the region profile) of a
    fresh process that runs `lines` (after importing mx and this module as t)
    with the variables `env` set (None: unset)."""
    code = '\n'.join([
        'import sys', 'sys.path.insert(0, %r)' % os.path.dirname(os.path.abspath(__file__)),
        'import mxnet as mx', 'import test_regions as t'] + lines)
    full_env = dict(os.environ)
    for name, value in env.items():
        full_env.pop(name, None)
        if value is not None:
            full_env[name] = value
    proc = subprocess.run([sys.executable, '-c', code], env=full_env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def test_max_pooling_of_channels_last_data_runs_the_hand_kernel():
    """The region profile names the kernel's step: the test above tests it, not
    oneDNN's pooling primitive."""
    output = fresh_process_output([
        "y = t.conv(mx.sym.var('data'), 'conv', 64, (3, 3), pad=(1, 1))",
        "y = mx.sym.Pooling(y, name='pool', pool_type='max', kernel=(3, 3), stride=(2, 2),",
        "                   pad=(1, 1))",
        "y = t.conv(y, 'after', 4, (1, 1))",
        'qsym, psym, qargs, qaux, x = t.partitioned(y, (2, 3, 9, 9))',
        't.run_symbol(psym, qargs, qaux, x)'], MXNET_BNQ_REGION_PROFILE='1')
    assert 'MaxPoolStep' in output, output[-3000:]


@pytest.mark.parametrize('channels', [1, 17, 64, 65, 130])
@pytest.mark.parametrize('act', ['relu', 'leaky'])
@pytest.mark.parametrize('avg_pool_before', [False, True])
def test_pooled_head_in_region_gives_the_ops_bits(channels, act, avg_pool_before):
    """BatchNorm + activation + global average pooling (a network's head) in a
    region, on channels-last data (AVX-512: 16 channels at a time and the
    tails), gives the bits of the op outside regions (planar NCHW); after an
    average pooling too (the _avg_pool_batch_norm_global_avg_pool op: the
    window means in float32, then the same mean kernel)."""
    data = mx.sym.var('data')
    y = conv(data, 'conv_a', channels, (3, 3), pad=(1, 1)) + conv(data, 'conv_b', channels,
                                                                  (3, 3), pad=(1, 1))
    if avg_pool_before:
        y = mx.sym.Pooling(y, kernel=(3, 3), stride=(2, 2), pad=(1, 1), pool_type='avg',
                           name='avg_pool')
    y = mx.sym.BatchNorm(y, fix_gamma=False, name='bn')
    if act == 'relu':
        y = mx.sym.Activation(y, act_type='relu', name='act')
    else:
        y = mx.sym.LeakyReLU(y, act_type='leaky', slope=0.25, name='act')
    y = mx.sym.Pooling(y, kernel=(1, 1), global_pool=True, pool_type='avg', name='pool')
    qsym, psym, qargs, qaux, x = partitioned(mx.sym.Flatten(y, name='flat'), (2, 3, 7, 9),
                                             quantize_mode='full')
    (ops,) = region_ops(psym).values()
    head = mxnet_bnq.names.QUANTIZED_AVG_POOL_BATCH_NORM_POOL if avg_pool_before else \
        '_contrib_quantized_batch_norm_%s_global_avg_pool' % ('relu' if act == 'relu' else 'act')
    assert head in ops, ops
    np.testing.assert_array_equal(run_symbol(psym, qargs, qaux, x)[0],
                                  run_symbol(qsym, qargs, qaux, x)[0])


@pytest.mark.parametrize('pool', [
    dict(kernel=(3, 3), stride=(2, 2), pad=(1, 1)),
    dict(kernel=(3, 3), stride=(1, 1), pad=(1, 1), count_include_pad=False),
    dict(kernel=(2, 2), stride=(2, 2), pooling_convention='full'),
    dict(kernel=(1, 1), global_pool=True),
])
@pytest.mark.parametrize('calib_mode', ['naive', 'none'])
def test_mxnet_average_pooling_in_region_matches_mxnet(pool, calib_mode):
    """MXNet's own flow's int8 average pooling (our flow replaces it), in a region."""
    data = mx.sym.var('data')
    y = mx.sym.Pooling(conv(data, 'conv', 6, (3, 3), pad=(1, 1)), name='pool', pool_type='avg',
                       **pool)
    y = conv(y, 'after', 5, (1, 1))
    shape = (2, 3, 11, 9)
    args, aux = small_nets.random_params(y, shape, 0)
    rng = np.random.default_rng(1)
    calib, x = rng.normal(0, 1, (8,) + shape[1:]).astype('f'), rng.normal(0, 1, shape).astype('f')
    qsym, qargs, qaux = small_nets.quantize_mxnet(y, args, aux, calib, calib_mode=calib_mode,
                                                  quantized_dtype='auto')
    psym = mxnet_bnq.partition(qsym, qargs, qaux)
    ops = [op for region in region_ops(psym).values() for op in region]
    assert '_contrib_quantized_pooling' in ops, ops
    (expected,), (got,) = run_symbol(qsym, qargs, qaux, x), run_symbol(psym, qargs, qaux, x)
    (step,) = output_steps(qsym, qargs, qaux, x)
    assert_within_one_lsb(expected, got, step)


@pytest.mark.parametrize('no_bias', [False, True])
@pytest.mark.parametrize('spatial', [1, 3])
@pytest.mark.parametrize('granularity', ['tensor-wise', 'channel-wise'])
def test_flatten_and_fully_connected_in_region_match_mxnet(no_bias, spatial, granularity):
    data = mx.sym.var('data')
    y = mx.sym.Activation(conv(data, 'conv', 6, (3, 3), pad=(1, 1)), act_type='relu', name='relu')
    y = mx.sym.Pooling(y, kernel=(1, 1), global_pool=spatial == 1, pool_type='avg', name='pool')
    y = mx.sym.FullyConnected(mx.sym.Flatten(y, name='flat'), num_hidden=7, no_bias=no_bias,
                              name='fc')
    _, psym, _, _ = compare_with_mxnet(y, (2, 3, 3, 3), claimed=['_sg_mkldnn_fully_connected'],
                                       granularity=granularity)
    assert sum(len(ops) for ops in region_ops(psym).values()) >= 4


@pytest.mark.parametrize('relu', [False, True])
@pytest.mark.parametrize('no_bias', [False, True])
@pytest.mark.parametrize('granularity', ['tensor-wise', 'channel-wise'])
def test_int8_output_fully_connected_in_region_matches_mxnet(relu, no_bias, granularity):
    """FC -> (ReLU) -> FC: MXNet fuses the first one's requantize (int8
    output, or uint8 after its fused ReLU); the last one gives float.
    Channel-wise, the op quantizes its float weights per output channel."""
    data = mx.sym.var('data')
    y = mx.sym.Activation(conv(data, 'conv', 6, (3, 3), pad=(1, 1)), act_type='relu', name='relu0')
    y = mx.sym.FullyConnected(mx.sym.Flatten(y, name='flat'), num_hidden=37, no_bias=no_bias,
                              name='fc1')
    if relu:
        y = mx.sym.Activation(y, act_type='relu', name='relu1')
    y = mx.sym.FullyConnected(y, num_hidden=5, name='fc2')
    _, psym, _, _ = compare_with_mxnet(y, (2, 3, 5, 5), granularity=granularity)
    (ops,) = region_ops(psym).values()
    assert ops.count('_sg_mkldnn_fully_connected') == 2, ops


@pytest.mark.skipif(not int8_arithmetic.EXACT, reason=int8_arithmetic.WHY_NOT_EXACT)
@pytest.mark.parametrize('relu', [False, True])
@pytest.mark.parametrize('seed', [0, 1, 2])
@pytest.mark.parametrize('granularity', ['tensor-wise', 'channel-wise'])
def test_fully_connected_chain_in_region_matches_numpy_reference(relu, seed, granularity):
    """data -> FC (int8, or uint8 after ReLU) -> FC (float), each FC from the
    numpy reference of MXNet's formulas, against the region."""
    data = mx.sym.var('data')
    y = mx.sym.FullyConnected(data, num_hidden=37, name='fc1')
    if relu:
        y = mx.sym.Activation(y, act_type='relu', name='relu1')
    y = mx.sym.FullyConnected(y, num_hidden=5, name='fc2')
    qsym, psym, qargs, _, x = partitioned(y, (4, 19), seed=seed, granularity=granularity)
    (ops,) = region_ops(psym).values()
    assert ops.count('_sg_mkldnn_fully_connected') == 2, ops
    attrs = [n['attrs'] for n in json.loads(qsym.tojson())['nodes'] if n['op'] != 'null']
    calib = [(float(a['min_calib_range']), float(a['max_calib_range'])) for a in attrs[:2]]
    # quantize_v2 with its calibrated range, in MXNet's float32 order
    q = np.clip(np.rint(x * (F(127.5) / F(max(map(abs, calib[0]))))), -128, 127).astype(np.int8)

    def fc(name, q_in, in_range, calib_range):
        p = {k[len(name) + 1:]: v.asnumpy() for k, v in qargs.items() if k.startswith(name + '_')}
        if granularity == 'channel-wise':
            return cref.channel_wise_fully_connected(q_in, in_range, p['weight'], p['bias'],
                                                     calib_range,
                                                     relu=relu and calib_range is not None)
        return cref.quantized_fully_connected(
            q_in, in_range, p['weight_quantize'],
            (p['weight_quantize_min'][0], p['weight_quantize_max'][0]), p['bias_quantize'],
            (p['bias_quantize_min'][0], p['bias_quantize_max'][0]), calib_range,
            relu=relu and calib_range is not None)

    q1 = fc('fc1', q, calib[0], calib[1])
    expected = fc('fc2', q1, calib[1], None)
    (got,) = run_symbol(psym, qargs, {}, x)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    if granularity == 'channel-wise':
        assert {a.get('channel_wise_quantize') for a in attrs[1:3]} == {'True'}, attrs


def _branch(data, name, kind):
    y = conv(data, name, 6, (3, 3), pad=(1, 1))
    if kind in ('relu', 'relu_pool'):
        y = mx.sym.Activation(y, act_type='relu', name=name + '_relu')
    if kind in ('pool', 'relu_pool'):
        y = mx.sym.Pooling(y, kernel=(2, 2), stride=(2, 2), pool_type='max', name=name + '_pool')
    return y


@pytest.mark.parametrize('left,right', [('relu', 'relu'), ('relu_pool', 'pool'),
                                        ('pool', 'pool'), ('pool', 'relu_pool')])
@pytest.mark.parametrize('calib_mode', ['naive', 'none'])
def test_elemwise_add_in_region_matches_mxnet(left, right, calib_mode):
    """Standalone quantized adds: uint8 + uint8, uint8 + int8 (MXNet first
    rescales the uint8 operand into int8), int8 + int8; int32 out uncalibrated."""
    data = mx.sym.var('data')
    y = mx.sym.elemwise_add(_branch(data, 'a', left), _branch(data, 'b', right), name='add')
    y = mx.sym.Activation(conv(y, 'after', 4, (1, 1)), act_type='sigmoid', name='sig')
    qsym, qargs, qaux = quantize(y, (2, 3, 10, 10), calib_mode=calib_mode)
    psym = mxnet_bnq.partition(qsym, qargs, qaux)
    ops = [op for region in region_ops(psym).values() for op in region]
    assert '_contrib_quantized_elemwise_add' in ops, (ops, mxnet_bnq.region_report(qsym))
    x = np.random.default_rng(4).normal(0, 1, (2, 3, 10, 10)).astype('f')
    add_out = [n for n in qsym.get_internals().list_outputs() if n.startswith('quantized_add_')]
    probe = mx.sym.Group([qsym.get_internals()[n] for n in add_out[:3]])
    q_add, lo, hi = run_symbol(probe, qargs, qaux, x)
    pprobe = mxnet_bnq.partition(probe, qargs, qaux)
    got, got_lo, got_hi = run_symbol(pprobe, qargs, qaux, x)
    assert got.dtype == q_add.dtype and (got_lo, got_hi) == (lo, hi)
    off = got.astype(np.int64) - q_add.astype(np.int64)
    assert np.abs(off).max() <= 1 and (off != 0).mean() <= 1e-3, np.abs(off).max()


@pytest.mark.parametrize('left,right', [('relu', 'relu'), ('relu', 'plain'), ('plain', 'plain')])
@pytest.mark.parametrize('calib_mode', ['naive', 'none'])
def test_concat_in_region_matches_mxnet(left, right, calib_mode):
    data = mx.sym.var('data')
    y = mx.sym.concat(_branch(data, 'a', left), _branch(data, 'b', right), dim=1, name='cat')
    y = conv(y, 'after', 4, (1, 1))
    qsym, qargs, qaux = quantize(y, (2, 3, 10, 10), calib_mode=calib_mode)
    psym = mxnet_bnq.partition(qsym, qargs, qaux)
    ops = [op for region in region_ops(psym).values() for op in region]
    assert '_contrib_quantized_concat' in ops, (ops, mxnet_bnq.region_report(qsym))
    assert len(region_ops(psym)) == 1
    x = np.random.default_rng(5).normal(0, 1, (2, 3, 10, 10)).astype('f')
    expected = run_symbol(qsym, qargs, qaux, x)[0]
    got = run_symbol(psym, qargs, qaux, x)[0]
    (step,) = output_steps(qsym, qargs, qaux, x)
    assert_within_one_lsb(expected, got, step)


@pytest.mark.parametrize('net', [small_nets.bn_after_add, small_nets.bn_after_pool,
                                 small_nets.bn_relu_global_pool, small_nets.bn_on_input,
                                 small_nets.bn_after_concat, small_nets.bn_after_concat_pool,
                                 small_nets.bn_after_quantized_concat,
                                 small_nets.bn_after_quantized_concat_pool])
@pytest.mark.parametrize('calib_mode', ['naive', 'none'])
def test_plugin_batch_norm_gives_the_same_bits_inside_a_region(net, calib_mode):
    _, psym, _, _ = compare_with_mxnet(net(), (4, 4, 8, 8), calib_mode=calib_mode)
    ops = [op for region in region_ops(psym).values() for op in region]
    assert any(mxnet_bnq.library.PLUGIN_OPS[0] in op or 'batch_norm' in op for op in ops), ops


@pytest.mark.parametrize('act_type', ['tanh', 'sigmoid'])
@pytest.mark.parametrize('calib_mode', ['naive', 'none'])
def test_concat_batch_norm_with_a_curve_gives_the_same_bits_inside_a_region(act_type, calib_mode):
    """A curve runs in oneDNN's binary primitive, one per concatenated part,
    each writing its channels of the output (the path every activation takes
    without AVX-512)."""
    sym = small_nets.bn_after_concat(quantized_concat=True, act_type=act_type)
    _, psym, _, _ = compare_with_mxnet(sym, (2, 4, 7, 9), calib_mode=calib_mode)
    ops = [op for region in region_ops(psym).values() for op in region]
    assert ops.count('_contrib_quantized_concat_batch_norm') == 2, ops


@pytest.mark.parametrize('head', ['avg_pool', 'avg_pool_mean'])
@pytest.mark.parametrize('quantized_concat', [False, True])
@pytest.mark.parametrize('calib_mode', ['naive', 'none'])
def test_concat_avg_pool_batch_norm_gives_the_same_bits_inside_a_region(head, quantized_concat,
                                                                        calib_mode):
    """An average pooling between a concat and its BatchNorm (or head): each
    part pooled with the BatchNorm of its channels in its own range, then
    one concatenation, inside the region as outside."""
    sym = small_nets.bn_after_concat(head, quantized_concat)
    _, psym, _, _ = compare_with_mxnet(sym, (2, 4, 9, 7), calib_mode=calib_mode)
    ops = [op for region in region_ops(psym).values() for op in region]
    op = (mxnet_bnq.names.QUANTIZED_CONCAT_AVG_POOL_BATCH_NORM if head == 'avg_pool'
          else mxnet_bnq.names.QUANTIZED_CONCAT_AVG_POOL_BATCH_NORM_POOL)
    assert ops.count(op) == 1, ops


@pytest.mark.parametrize('channels', [3, 16, 37, 70, 150])
@pytest.mark.parametrize('source', ['int8 sum', 'uint8 pool'])
@pytest.mark.parametrize('act', [None, 'relu', 'leaky', 'clip'])
def test_batch_norm_bits_inside_a_region_for_any_channel_count(channels, source, act):
    """The BN is the graph's last op, so its quantized output reaches the
    dequantized result unchanged: inside and outside a region, the same bits
    (the hand-vectorized kernel inside, 64, 16 and fewer channels at a time,
    oneDNN's binary primitive outside), with and without an activation."""
    data = mx.sym.var('data')
    if source == 'int8 sum':
        y = conv(data, 'conv_a', channels, (3, 3), pad=(1, 1)) + \
            conv(data, 'conv_b', channels, (1, 1))
    else:
        y = mx.sym.Activation(conv(data, 'conv_a', channels, (3, 3), pad=(1, 1)),
                              act_type='relu', name='relu0')
        y = mx.sym.Pooling(y, kernel=(2, 2), stride=(2, 2), pool_type='max', name='pool')
    y = mx.sym.BatchNorm(y, fix_gamma=False, eps=1e-5, name='bn')
    if act == 'relu':
        y = mx.sym.Activation(y, act_type='relu', name='relu')
    elif act == 'leaky':
        y = mx.sym.LeakyReLU(y, slope=0.1, name='leaky')
    elif act == 'clip':  # clamps inside the int8 range at both ends
        y = mx.sym.clip(y, -0.5, 1.0, name='clip')
    shape = (2, 5, 9, 11)
    args, aux = small_nets.random_params(y, shape, channels)
    rng = np.random.default_rng(channels)
    calib, x = rng.normal(0, 1, (8,) + shape[1:]).astype('f'), rng.normal(0, 1, shape).astype('f')
    # quantize_mode='full': smart mode leaves a network's last BatchNorm fp32
    qsym, qargs, qaux = mxnet_bnq.quantize_model_mkldnn(
        y, args, aux, calib_mode='naive', label_names=None, quantized_dtype='auto',
        quantize_mode='full', calib_data=mx.io.NDArrayIter(calib, batch_size=8),
        num_calib_examples=8, regions=False)
    psym = mxnet_bnq.partition(qsym, qargs, qaux)
    (ops,) = region_ops(psym).values()
    assert any('batch_norm' in op for op in ops), ops
    (expected,), (got,) = run_symbol(qsym, qargs, qaux, x), run_symbol(psym, qargs, qaux, x)
    np.testing.assert_array_equal(got, expected)


def test_uint8_sum_operand_is_read_as_uint8():
    """MXNet 1.9.1 reads a uint8 sum operand of an int8 conv+sum as int8 (clipping
    negative sums to 0, wrapping values above 127); the region computes the right
    result, checked against the numpy reference."""
    data = mx.sym.var('data')
    p = mx.sym.Pooling(mx.sym.Activation(conv(data, 'conv0', 6, (3, 3), pad=(1, 1)),
                                         act_type='relu', name='relu0'),
                       kernel=(2, 2), stride=(2, 2), pool_type='max', name='pool')
    sym = conv(p, 'conv1', 6, (3, 3), pad=(1, 1)) + p
    shape = (2, 3, 10, 10)
    qsym, qargs, qaux = quantize(sym, shape, seed=3)
    psym = mxnet_bnq.partition(qsym, qargs, qaux)
    assert len(region_ops(psym)) == 1
    x = np.random.default_rng(9).normal(0, 1, shape).astype('f')
    nodes = json.loads(qsym.tojson())['nodes']
    (fused,) = [n for n in nodes if n['op'] == '_sg_mkldnn_conv' and 'with_sum' in n['attrs']]
    internals = qsym.get_internals()
    pool_out = [internals[n] for n in internals.list_outputs()
                if n.startswith('quantized_pool_') or n.startswith('quantized_pool')][:3]
    q_pool, lo, hi = run_symbol(mx.sym.Group(pool_out), qargs, qaux, x)
    assert q_pool.dtype == np.uint8
    attrs = fused['attrs']
    expected = cref.quantized_conv(
        q_pool, (float(lo[0]), float(hi[0])), qargs['conv1_weight'].asnumpy(),
        qargs['conv1_bias'].asnumpy(), (float(attrs['min_calib_range']),
                                        float(attrs['max_calib_range'])),
        'int8', stride=(1, 1), pad=(1, 1), sum_q=q_pool, sum_range=(float(lo[0]), float(hi[0])))
    step = max(abs(float(attrs['min_calib_range'])), abs(float(attrs['max_calib_range']))) / 127.5
    (got,) = run_symbol(psym, qargs, qaux, x)
    assert_within_one_lsb(expected.astype(np.float64) * step, got, step)
    (mxnet_result,) = run_symbol(qsym, qargs, qaux, x)
    assert np.abs(mxnet_result - got).max() > step  # MXNet's bug is visible here


@pytest.mark.skipif(not int8_arithmetic.EXACT, reason=int8_arithmetic.WHY_NOT_EXACT)
@pytest.mark.parametrize('case', [
    dict(bn=dict(gamma=None, eps=1e-5, fix_gamma=False), relu=True, no_bias=True),
    dict(bn=None, relu=False, no_bias=False),
])
def test_convolution_in_region_matches_numpy_reference(case):
    data = mx.sym.var('data')
    y = conv(data, 'conv', 7, (3, 3), stride=(2, 1), pad=(1, 0), no_bias=case['no_bias'])
    if case['bn']:
        y = mx.sym.BatchNorm(y, fix_gamma=False, eps=1e-5, name='bn')
    if case['relu']:
        y = mx.sym.Activation(y, act_type='relu', name='relu')
    shape = (2, 5, 9, 8)
    qsym, qargs, qaux = quantize(y, shape, seed=4)
    psym = mxnet_bnq.partition(qsym, qargs, qaux)
    x = np.random.default_rng(10).normal(0, 1, shape).astype('f')
    nodes = json.loads(qsym.tojson())['nodes']
    (qnode,) = [n for n in nodes if n['op'] == '_contrib_quantize_v2']
    (cnode,) = [n for n in nodes if n['op'] == '_sg_mkldnn_conv']
    internals = qsym.get_internals()
    q_in, lo, hi = run_symbol(mx.sym.Group([internals[qnode['name'] + '_output0'],
                                            internals[qnode['name'] + '_output1'],
                                            internals[qnode['name'] + '_output2']]),
                              qargs, qaux, x)
    bn = None
    if case['bn']:
        bn = dict(gamma=qargs['bn_gamma'].asnumpy(), beta=qargs['bn_beta'].asnumpy(),
                  mean=qaux['bn_moving_mean'].asnumpy(), var=qaux['bn_moving_var'].asnumpy(),
                  eps=1e-5, fix_gamma=False)
    calib = (float(cnode['attrs']['min_calib_range']), float(cnode['attrs']['max_calib_range']))
    out_dtype = 'uint8' if case['relu'] else 'int8'
    expected = cref.quantized_conv(
        q_in, (float(lo[0]), float(hi[0])), qargs['conv_weight'].asnumpy(),
        None if case['no_bias'] else qargs['conv_bias'].asnumpy(), calib, out_dtype,
        stride=(2, 1), pad=(1, 0), bn=bn, relu=case['relu'])
    step = max(abs(calib[0]), abs(calib[1])) / cref.RANGE[out_dtype]
    (got,) = run_symbol(psym, qargs, qaux, x)
    assert_within_one_lsb(expected.astype(np.float64) * float(step), got, float(step))


@pytest.mark.skipif(not int8_arithmetic.EXACT, reason=int8_arithmetic.WHY_NOT_EXACT)
@pytest.mark.parametrize('bn', [False, True])
@pytest.mark.parametrize('nonnegative', [False, True])
def test_fused_gelu_in_region_is_gelu_of_the_real_values(bn, nonnegative):
    """conv [+BN] + LeakyReLU(gelu): the region applies gelu to the real
    values (numpy reference); MXNet applies it to the requantized ones."""
    data = mx.sym.var('data')
    y = conv(data, 'conv', 7, (3, 3), stride=(2, 1), pad=(1, 0))
    if bn:
        y = mx.sym.BatchNorm(y, fix_gamma=False, eps=1e-5, name='bn')
    y = mx.sym.LeakyReLU(y, act_type='gelu', name='gelu')
    shape = (2, 5, 9, 8)
    qsym, psym, qargs, qaux, x = partitioned(y, shape, seed=3, nonnegative=nonnegative,
                                             claimed=['_sg_mkldnn_conv'])
    nodes = json.loads(qsym.tojson())['nodes']
    (qnode,) = [n for n in nodes if n['op'] == '_contrib_quantize_v2']
    (cnode,) = [n for n in nodes if n['op'] == '_sg_mkldnn_conv']
    internals = qsym.get_internals()
    q_in, lo, hi = run_symbol(mx.sym.Group([internals[qnode['name'] + '_output%d' % i]
                                            for i in range(3)]), qargs, qaux, x)
    folded = None
    if bn:
        folded = dict(gamma=qargs['bn_gamma'].asnumpy(), beta=qargs['bn_beta'].asnumpy(),
                      mean=qaux['bn_moving_mean'].asnumpy(), var=qaux['bn_moving_var'].asnumpy(),
                      eps=1e-5, fix_gamma=False)
    calib = (float(cnode['attrs']['min_calib_range']), float(cnode['attrs']['max_calib_range']))
    expected = cref.quantized_conv(
        q_in, (float(lo[0]), float(hi[0])), qargs['conv_weight'].asnumpy(),
        qargs['conv_bias'].asnumpy(), calib, 'int8', stride=(2, 1), pad=(1, 0), bn=folded,
        act=('gelu',))
    step = max(abs(calib[0]), abs(calib[1])) / cref.RANGE['int8']
    (got,) = run_symbol(psym, qargs, qaux, x)
    assert_within_one_lsb(expected.astype(np.float64) * float(step), got, float(step))
    # MXNet's gelu of values in output levels is nearly a ReLU: it loses gelu's
    # negative part (down to -0.17 of the real values).
    (mxnet,) = run_symbol(qsym, qargs, qaux, x)
    assert np.abs(mxnet - got).max() > 1.5 * step and mxnet.min() >= -step


def test_region_report_names_what_stays_with_mxnet():
    data = mx.sym.var('data')
    y = mx.sym.Activation(conv(data, 'conv', 6, (3, 3), pad=(1, 1)), act_type='sigmoid',
                          name='sig')
    y = conv(y, 'conv2', 4, (3, 3))
    qsym, qargs, qaux = quantize(y, (2, 3, 8, 8))
    report = mxnet_bnq.region_report(qsym)
    assert report['claimable'].get('_sg_mkldnn_conv', 0) >= 1
    reasons = {n['node']: n['reason'] for n in report['left_to_mxnet']}
    assert reasons == {'sig': 'op Activation is not run in regions'}, reasons
    psym = mxnet_bnq.partition(qsym, qargs, qaux)
    after = mxnet_bnq.region_report(psym)
    # The sigmoid splits the graph: int8 before it, int8 after it.
    assert len(after['regions']) == 2 and all(r['ops'] >= 2 for r in after['regions'])
    text = mxnet_bnq.format_region_report(after)
    assert 'left to MXNet' in text and 'sig | Activation' in text


@settings(max_examples=15, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(conv_cases)
def test_uint8_input_convolution_matches_mxnet(case):
    """Region against MXNet only (no exact reference): what holds on every
    instruction set when MXNet's oneDNN is limited to the same one."""
    case = dict(case, uint8_input=True, sum=False, group='one' if case['group'] == 'two'
                else case['group'])
    sym, shape = conv_graph(case)
    extent = [d * (k - 1) + 1 for d, k in zip(case['dilate'], case['kernel'])]
    if any(h + 2 * p < e for h, p, e in zip(case['hw'], case['pad'], extent)):
        return
    compare_with_mxnet(sym, shape, nonnegative=True, claimed=['_sg_mkldnn_conv'])


def test_uint8_input_convolutions_match_mxnet_on_avx2():
    """Without VNNI both oneDNN versions saturate pairwise 16-bit sums of
    u8 x s8 products (vpmaddubsw) the same way: with ours and MXNet's limited to
    AVX2 the region gives MXNet's bits.  (int8 input they handle differently,
    see the README.)"""
    env = dict(os.environ, ONEDNN_MAX_CPU_ISA='AVX2', DNNL_MAX_CPU_ISA='AVX2')
    proc = subprocess.run([sys.executable, '-m', 'pytest', os.path.abspath(__file__), '-q',
                           '-p', 'no:cacheprovider', '-k',
                           'test_uint8_input_convolution_matches_mxnet and not avx2'],
                          env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert '1 passed' in proc.stdout.splitlines()[-1]


@pytest.mark.parametrize('isa', ['AVX512_CORE_VNNI', 'AVX2'])
def test_parity_holds_on_older_instruction_sets(isa):
    """oneDNN picks its kernels at run time (AMX, VNNI or AVX2); the region's
    numerics must not depend on which: the tests above, with both oneDNN
    versions limited to `isa`.  (Without VNNI they are not exact arithmetic,
    and int8_arithmetic turns the comparisons with exact references into
    comparisons with MXNet's own ops: see the README.)"""
    env = dict(os.environ, ONEDNN_MAX_CPU_ISA=isa, DNNL_MAX_CPU_ISA=isa)
    selection = 'not older_instruction_sets and not numpy_reference_of and not avx2'
    proc = subprocess.run([sys.executable, '-m', 'pytest', os.path.abspath(__file__), '-q',
                           '-p', 'no:cacheprovider', '-k', selection], env=env,
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert ' passed' in proc.stdout.splitlines()[-1]


@pytest.mark.skipif('avx512_vnni' not in int8_arithmetic.cpu_flags(),
                    reason='the choice is between oneDNN kernels for AVX-512 VNNI')
def test_small_convolutions_run_the_direct_kernels_without_amx():
    """Without AMX, a convolution of fewer than 64 input channels runs oneDNN's
    direct jit_int8 kernel (10-45% faster there than the brgemm one oneDNN
    ranks first); from 64 channels oneDNN's first choice stands."""
    output = fresh_process_output([
        "y = t.conv(mx.sym.var('data'), 'c16', 16, (3, 3), pad=(1, 1))",
        "y = mx.sym.Activation(y, act_type='relu', name='relu16')",
        "y = t.conv(y, 'c64', 64, (3, 3), pad=(1, 1))",
        "y = mx.sym.Activation(y, act_type='relu', name='relu64')",
        "y = t.conv(y, 'after', 8, (3, 3), pad=(1, 1))",
        'qsym, psym, qargs, qaux, x = t.partitioned(y, (2, 3, 9, 9))',
        't.run_symbol(psym, qargs, qaux, x)'],
        ONEDNN_MAX_CPU_ISA='AVX512_CORE_VNNI', ONEDNN_VERBOSE='1')
    runs = {}
    for line in output.splitlines():
        fields = line.split(',')
        if line.startswith('onednn_verbose,exec,cpu,convolution'):
            runs[re.search(r'_ic(\d+)oc', fields[-2]).group(1)] = fields[4]
    assert runs.get('16', '').startswith('jit_int8'), runs
    assert runs.get('64', '').startswith('brgconv'), runs


def test_region_profile_names_the_time_of_each_step_kind():
    """MXNET_BNQ_REGION_PROFILE=N: every N forwards each region prints the time
    of its steps per kind (for 'where the time goes'); unset, nothing."""
    lines = [
        "y = mx.sym.Activation(t.conv(mx.sym.var('data'), 'conv', 6, (3, 3), pad=(1, 1)),",
        "                      act_type='relu', name='relu')",
        'qsym, psym, qargs, qaux, x = t.partitioned(y, (2, 3, 5, 5))',
        't.run_symbol(psym, qargs, qaux, x)']
    for every, expected in (('1', True), (None, False)):
        output = fresh_process_output(lines, MXNET_BNQ_REGION_PROFILE=every)
        assert ('mxnet_bnq region profile: ' in output) == expected, output[-3000:]
        assert ('PrimitiveStep' in output) == expected
