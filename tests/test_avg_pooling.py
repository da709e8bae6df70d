"""_contrib_quantized_avg_pooling: MXNet's quantized average pooling writing
the mean in its own calibrated range.  Against MXNet's own
_contrib_quantized_pooling (no calibrated range: the same bits), a numpy
reference of the arithmetic (calibrated: the real mean quantized once at the
output's step), inside regions (the same bits), and in the flow."""
import json

import mxnet as mx
import numpy as np
import pytest
import quant_reference as ref
import small_nets
from bn_cases import assert_within_one_step

import mxnet_bnq
from mxnet_bnq import names

POOLINGS = [dict(kernel=(2, 2), stride=(2, 2)),
            dict(kernel=(3, 3), stride=(1, 1), pad=(1, 1)),
            dict(kernel=(3, 3), stride=(2, 2), pad=(1, 1), count_include_pad=False),
            dict(kernel=(3, 2), stride=(2, 1)),
            dict(kernel=(1, 1), global_pool=True),
            dict(kernel=(2, 2), stride=(2, 2), pooling_convention='full')]


def quantized_input(rng, dtype, shape=(2, 5, 7, 9)):
    lo, hi = ref.LIMITS[dtype]
    q = rng.integers(lo, hi + 1, shape).astype(dtype)
    return q, (-2.0 if dtype == 'int8' else 0.0), 2.0


def run(q, lo, hi, **attrs):
    out = mx.nd.contrib.quantized_avg_pooling(mx.nd.array(q, dtype=q.dtype), mx.nd.array([lo]),
                                              mx.nd.array([hi]), **attrs)
    return out[0].asnumpy(), float(out[1].asscalar()), float(out[2].asscalar())


@pytest.mark.parametrize('pooling', POOLINGS, ids=str)
@pytest.mark.parametrize('dtype', ['int8', 'uint8'])
def test_without_a_range_it_is_mxnet_quantized_pooling(rng, pooling, dtype):
    q, lo, hi = quantized_input(rng, dtype)
    theirs = mx.nd.contrib.quantized_pooling(mx.nd.array(q, dtype=dtype), mx.nd.array([lo]),
                                             mx.nd.array([hi]), pool_type='avg', **pooling)
    ours = run(q, lo, hi, **pooling)
    np.testing.assert_array_equal(ours[0], theirs[0].asnumpy())
    assert ours[1:] == (theirs[1].asscalar(), theirs[2].asscalar())


@pytest.mark.parametrize('pooling', [p for p in POOLINGS if 'pooling_convention' not in p],
                         ids=str)
@pytest.mark.parametrize('dtype', ['int8', 'uint8'])
def test_the_mean_is_rounded_once_in_its_own_range(rng, pooling, dtype):
    q, lo, hi = quantized_input(rng, dtype)
    out_lo, out_hi = (-1.1 if dtype == 'int8' else 0.0), 1.3
    got, glo, ghi = run(q, lo, hi, min_calib_range=out_lo, max_calib_range=out_hi, **pooling)
    mean = ref.avg_pool(ref.dequantize(q, lo, hi), **pooling)
    expected = ref.quantize(mean, dtype, out_lo, out_hi)
    assert (glo, ghi) == pytest.approx((out_lo, out_hi))
    assert_within_one_step(got, expected, levels=mean / ref.step(dtype, out_lo, out_hi))


@pytest.mark.parametrize('attrs,match', [
    (dict(kernel=(2, 2), pool_type='max'), "pool_type must be 'avg'"),
    (dict(kernel=(2, 2), min_calib_range=0.5), 'must be given together'),
    (dict(kernel=(2, 2), min_calib_range=2, max_calib_range=1), 'greater than max_calib_range'),
    (dict(kernel=(2, 2), max_calib_range='x', min_calib_range=0), 'cannot parse attribute'),
    (dict(kernel=(2, 2), no_such_key=1), "unknown attribute 'no_such_key'"),
    (dict(kernel=(2, 2, 2)), 'only 2-D pooling'),
    (dict(kernel=(9, 9)), 'kernel is larger than the padded input'),
    (dict(kernel=(2, 2), layout='NHWC'), 'layout NHWC is not supported'),
])
def test_bad_attributes_are_clear_errors(rng, attrs, match):
    q, lo, hi = quantized_input(rng, 'int8')
    with pytest.raises(mx.MXNetError, match=match):
        run(q, lo, hi, **attrs)
    assert run(q, lo, hi, kernel=(2, 2))[0].shape == (2, 5, 6, 8)  # the process lives on


def avg_pool_net():
    """conv + conv -> average pooling -> BN -> ReLU -> conv, and the pooled
    tensor summed into the last conv (as the residual of a ResNet stage)."""
    data = mx.sym.var('data')
    s = small_nets._conv(data, 'conv_a', 8) + small_nets._conv(data, 'conv_b', 8)
    p = mx.sym.Pooling(s, kernel=(2, 2), stride=(2, 2), pool_type='avg', name='pool')
    bn = mx.sym.BatchNorm(p, fix_gamma=False, eps=1e-5, name='bn')
    r = mx.sym.Activation(bn, act_type='relu', name='relu')
    return mx.sym.Flatten(small_nets._conv(r, 'conv_c', 8) + p, name='flat')


@pytest.mark.parametrize('calib_mode', ['naive', 'none'])
def test_the_flow_calibrates_the_pooled_output(calib_mode):
    sym = avg_pool_net()
    shape = (4, 3, 8, 8)
    args, aux = small_nets.random_params(sym, shape, 3)
    rng = np.random.default_rng(4)
    calib = rng.normal(0, 1, (16,) + shape[1:]).astype('f')
    qsym, qargs, qaux = mxnet_bnq.quantize_model_mkldnn(
        sym, args, aux, calib_mode=calib_mode, label_names=None, quantized_dtype='auto',
        calib_data=mx.io.NDArrayIter(calib, batch_size=16), num_calib_examples=16,
        regions=False)
    nodes = json.loads(qsym.tojson())['nodes']
    (pool,) = [n for n in nodes if n['op'] == names.QUANTIZED_AVG_POOLING]
    assert pool['attrs'][names.PLUGIN_ATTR] == '1'
    # The BatchNorm takes the pooling in (the sum reads the pooling).
    (bn,) = [n for n in nodes if n['op'] == names.QUANTIZED_AVG_POOL_BATCH_NORM]
    assert bn['inputs'][0][0] == pool['inputs'][0][0]
    # Inside a region: the same bits (uncalibrated: ranges found at run time).
    psym = mxnet_bnq.partition(qsym, qargs, qaux)
    x = rng.normal(0, 1, shape).astype('f')
    (outside,), (inside,) = (small_nets.forward(s, qargs, qaux, x) for s in (qsym, psym))
    ops = [m['op'] for n in json.loads(psym.tojson())['nodes'] for g in n.get('subgraphs', [])
           for m in g['nodes']]
    assert {names.QUANTIZED_AVG_POOLING, names.QUANTIZED_AVG_POOL_BATCH_NORM} <= set(ops), ops
    np.testing.assert_array_equal(inside, outside)
    if calib_mode == 'none':  # no range to write: MXNet's op's range
        assert 'min_calib_range' not in pool['attrs']
        return
    # The range of the fp32 pooling's output over the calibration data.
    internals = sym.get_internals()
    (fp32_pool,) = small_nets.forward(internals['pool_output'], args, aux, calib)
    assert float(pool['attrs']['min_calib_range']) == pytest.approx(fp32_pool.min(), rel=1e-6)
    assert float(pool['attrs']['max_calib_range']) == pytest.approx(fp32_pool.max(), rel=1e-6)


def test_a_range_wider_than_the_input_passes_the_input_range_on(rng):
    """Every mean lies within the input's range: a wider calibrated range
    (e.g. an input range clipped by entropy calibration, or all zeros) would
    only coarsen the step.  Then MXNet's op's bits and range."""
    q, lo, hi = quantized_input(rng, 'int8')
    plain = run(q, lo, hi, kernel=(2, 2), stride=(2, 2))
    wide = run(q, lo, hi, kernel=(2, 2), stride=(2, 2), min_calib_range=-3, max_calib_range=3)
    np.testing.assert_array_equal(wide[0], plain[0])
    assert wide[1:] == plain[1:] == (lo, hi)
    zeros = np.zeros_like(q)
    out = run(zeros, 0.0, 0.0, kernel=(2, 2), min_calib_range=0, max_calib_range=1e-20)
    assert out[1:] == (0.0, 0.0) and not out[0].any()


# _contrib_quantized_avg_pool_batch_norm: the pooling, then the plugin's
# quantized BatchNorm (+ act) on the unrounded mean, rounded once.
POOL_BN_ACTS = [None, ('relu',), ('clip', 0.0, 6.0), ('clip', -1.0, 1.5), ('leaky', 0.1),
                ('tanh',), ('sigmoid',)]


def run_pool_bn(case, act, pooling, head=False, **attrs):
    """The op on `case`; head: the _global_avg_pool form."""
    from bn_cases import act_attrs
    args = [mx.nd.array(case['q'], dtype=case['q'].dtype)]
    args += [mx.nd.array(case[k], dtype='float32') for k in ('gamma', 'beta', 'mean', 'var')]
    args += [mx.nd.array([case['min_data']]), mx.nd.array([case['max_data']])]
    attrs = dict(attrs, **pooling, **(act_attrs(act) if act else {}))
    op = mx.nd.contrib.quantized_avg_pool_batch_norm_global_avg_pool if head else \
        mx.nd.contrib.quantized_avg_pool_batch_norm
    out = op(*args, **{k: str(v) for k, v in attrs.items()})
    return out[0].asnumpy(), float(out[1].asscalar()), float(out[2].asscalar())


def reference_pool_bn(case, act, pooling):
    """BN(+act) of the real window means of the real inputs, in float64."""
    mean = ref.avg_pool(ref.dequantize(case['q'], case['min_data'], case['max_data']), **pooling)
    return ref.activate(ref.batch_norm(mean, case['gamma'], case['beta'], case['mean'],
                                       case['var'], 1e-5, False, 1), act)


def reference_output_range(case, act, attrs):
    """(dtype, min, max) of the output: the calibrated range in `attrs`
    (from 0 for uint8), else the one derived from the input's."""
    out_dtype = 'uint8' if ref.nonnegative(act) else 'int8'
    if 'min_calib_range' in attrs:
        lo = 0.0 if out_dtype == 'uint8' else attrs['min_calib_range']
        return out_dtype, lo, attrs['max_calib_range']
    lo, hi = ref.derived_output_range(str(case['q'].dtype), case['min_data'], case['max_data'],
                                      case['gamma'], case['beta'], case['mean'], case['var'],
                                      1e-5, False, act)
    return out_dtype, lo, hi


@pytest.mark.parametrize('pooling', [p for p in POOLINGS if 'pooling_convention' not in p],
                         ids=str)
@pytest.mark.parametrize('dtype', ['int8', 'uint8'])
@pytest.mark.parametrize('act', POOL_BN_ACTS, ids=str)
@pytest.mark.parametrize('calibrated', [True, False])
def test_pool_batch_norm_matches_reference(rng, pooling, dtype, act, calibrated):
    """BN(+act) of the real mean of the real inputs, quantized once: in the
    calibrated range, or in the range derived from the input's (every mean
    lies within it); uint8 where the activation cannot be negative."""
    from bn_cases import make_case
    case = make_case(rng, (2, 5, 7, 9), 1, dtype, data_range=2.0)
    attrs = dict(eps=1e-5, fix_gamma=False)
    if calibrated:
        attrs.update(min_calib_range=float(min(ref.activate(-1.5, act), 0)),
                     max_calib_range=float(ref.activate(2.0, act)))
    got, lo, hi = run_pool_bn(case, act, pooling, **attrs)
    y = reference_pool_bn(case, act, pooling)
    out_dtype, lo_ref, hi_ref = reference_output_range(case, act, attrs)
    assert got.dtype == out_dtype
    assert (lo, hi) == pytest.approx((lo_ref, hi_ref), rel=1e-4, abs=1e-6)
    expected = ref.quantize(y, out_dtype, lo_ref, hi_ref)
    assert_within_one_step(got, expected, levels=y / ref.step(out_dtype, lo_ref, hi_ref))


@pytest.mark.parametrize('attrs,message', [
    (dict(pool_type='max'), "pool_type must be 'avg'"),
    (dict(axis=2), 'axis must be 1'),
    (dict(act_type='swish'), "unsupported act_type 'swish'"),
    (dict(kernel=(9, 9)), 'kernel is larger than the padded input'),
])
def test_pool_batch_norm_bad_attributes_are_clear_errors(rng, attrs, message):
    from bn_cases import make_case
    case = make_case(rng, (2, 5, 7, 9), 1, 'int8')
    pooling = dict(kernel=(2, 2), stride=(2, 2))
    pooling.update({k: v for k, v in attrs.items() if k in ('pool_type', 'kernel')})
    rest = {k: v for k, v in attrs.items() if k not in pooling}
    with pytest.raises(mx.MXNetError, match=message):
        run_pool_bn(case, None, pooling, **rest)


def test_pool_batch_norm_bad_inputs_are_clear_errors_and_the_op_still_runs(rng):
    from bn_cases import make_case
    pooling = dict(kernel=(2, 2), stride=(2, 2))
    case = make_case(rng, (2, 5, 7, 9), 1, 'int8')
    with pytest.raises(mx.MXNetError, match='data must be int8 or uint8, got float32'):
        run_pool_bn(dict(case, q=case['q'].astype('float32')), None, pooling)
    with pytest.raises(mx.MXNetError, match='expects 4-D NCHW data'):
        run_pool_bn(make_case(rng, (2, 5, 7, 9, 3), 1, 'int8'), None, pooling)
    with pytest.raises(mx.MXNetError, match='gamma has shape'):
        run_pool_bn(dict(case, gamma=case['gamma'][:3]), None, pooling)
    got, _, _ = run_pool_bn(case, ('relu',), pooling, fix_gamma=False)
    assert got.dtype == np.uint8 and got.shape == (2, 5, 3, 4)


# _contrib_quantized_avg_pool_batch_norm_global_avg_pool: a network's head
# (BatchNorm + act + mean) after an average pooling.
HEAD_ACTS = [None, ('relu',), ('clip', 0.0, 6.0), ('clip', -1.0, 1.5), ('leaky', 0.1)]


@pytest.mark.parametrize('pooling', [p for p in POOLINGS if 'pooling_convention' not in p],
                         ids=str)
@pytest.mark.parametrize('dtype', ['int8', 'uint8'])
@pytest.mark.parametrize('act', HEAD_ACTS, ids=str)
@pytest.mark.parametrize('calibrated', [True, False])
def test_pooled_head_matches_reference(rng, pooling, dtype, act, calibrated):
    """The real mean over every position of BN(+act) of the real window means
    of the real inputs, quantized once: in the calibrated range (the pooled
    output's), or in the range derived for the BN+act values (every mean of
    them lies within it); no rounding of the window means."""
    from bn_cases import make_case
    case = make_case(rng, (2, 5, 7, 9), 1, dtype, data_range=2.0)
    attrs = dict(eps=1e-5, fix_gamma=False)
    if calibrated:  # a pooled range, smaller than the values' own
        attrs.update(min_calib_range=float(min(ref.activate(-0.5, act), 0)),
                     max_calib_range=float(ref.activate(1.0, act)))
    got, lo, hi = run_pool_bn(case, act, pooling, head=True, **attrs)
    pooled = reference_pool_bn(case, act, pooling).mean(axis=(2, 3), keepdims=True)
    out_dtype, lo_ref, hi_ref = reference_output_range(case, act, attrs)
    assert got.dtype == out_dtype and got.shape == (2, 5, 1, 1)
    assert (lo, hi) == pytest.approx((lo_ref, hi_ref), rel=1e-4, abs=1e-6)
    expected = ref.quantize(pooled, out_dtype, lo_ref, hi_ref)
    assert_within_one_step(got, expected, levels=pooled / ref.step(out_dtype, lo_ref, hi_ref))


def test_pooled_head_rounds_once_where_two_ops_round_twice(rng):
    """Against the average pooling and the head as two int8 ops (the window
    means rounded to int8 first): the fused op is closer to the reference."""
    from bn_cases import make_case
    case = make_case(rng, (4, 16, 8, 8), 1, 'int8', data_range=2.0)
    pooling = dict(kernel=(2, 2), stride=(2, 2))
    attrs = dict(eps=1e-5, fix_gamma=False, min_calib_range=0.0, max_calib_range=1.0)
    fused, lo, hi = run_pool_bn(case, ('relu',), pooling, head=True, **attrs)
    pooled_q = mx.nd.contrib.quantized_pooling(
        mx.nd.array(case['q'], dtype='int8'), mx.nd.array([case['min_data']]),
        mx.nd.array([case['max_data']]), pool_type='avg', **pooling)
    two_ops = mx.nd.contrib.quantized_batch_norm_relu_global_avg_pool(
        pooled_q[0], *[mx.nd.array(case[k]) for k in ('gamma', 'beta', 'mean', 'var')],
        pooled_q[1], pooled_q[2], **{k: str(v) for k, v in attrs.items()})[0].asnumpy()
    y = reference_pool_bn(case, ('relu',), pooling)
    levels = np.clip(y.mean(axis=(2, 3), keepdims=True) / ref.step('uint8', lo, hi), 0, 255)
    fused_error = np.abs(fused.astype(np.float64) - levels)
    two_op_error = np.abs(two_ops.astype(np.float64) - levels)
    assert fused_error.max() <= 0.5 + 1e-3
    assert fused_error.mean() < two_op_error.mean(), (fused_error.mean(), two_op_error.mean())


@pytest.mark.parametrize('act', [('tanh',), ('sigmoid',)], ids=str)
def test_pooled_head_refuses_a_curve(rng, act):
    """The mean is taken in output levels, which only a linear activation allows."""
    from bn_cases import make_case
    case = make_case(rng, (2, 5, 7, 9), 1, 'int8')
    with pytest.raises(mx.MXNetError, match="act_type '%s' cannot be fused with global average"
                       % act[0]):
        run_pool_bn(case, act, dict(kernel=(2, 2), stride=(2, 2)), head=True, fix_gamma=False)
