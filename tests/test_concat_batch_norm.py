"""_contrib_quantized_concat_batch_norm: a BatchNorm [+ activation] over the
concatenation of quantized inputs, each read in its own range, against the
numpy reference (dequantize every part, concatenate, BatchNorm in float64,
activate, quantize once) and against the plugin's single-input op."""
import json

import mxnet as mx
import numpy as np
import pytest
import quant_reference as ref
import small_nets
from bn_cases import act_attrs, assert_within_one_step, make_case, run_op

import mxnet_bnq
from mxnet_bnq import names

ACTS = [None, ('relu',), ('leaky', 0.1), ('clip', 0.0, 6.0), ('clip', -1.0, 1.5), ('tanh',),
        ('sigmoid',)]


def make_parts(rng, channels, dtypes, spatial=(5, 3), batch=2):
    """Quantized parts of `channels` each, of `dtypes`, in ranges that differ
    by up to 30x (as a dense block's block input and new features do)."""
    parts = []
    for c, dtype in zip(channels, dtypes):
        q = rng.integers(*ref.LIMITS[dtype], endpoint=True, size=(batch, c) + spatial)
        hi = float(rng.uniform(0.2, 6.0))
        parts.append((q.astype(dtype), 0.0 if dtype == 'uint8' else -hi, hi))
    total = sum(channels)
    params = dict(gamma=rng.uniform(0.2, 2.0, total).astype(np.float32),
                  beta=rng.normal(0, 1, total).astype(np.float32),
                  mean=rng.normal(0, 1, total).astype(np.float32),
                  var=rng.uniform(0.05, 3.0, total).astype(np.float32))
    return parts, params


def run_concat_op(parts, params, act=None, op=None, **attrs):
    """The op (by default _contrib_quantized_concat_batch_norm) on `parts`."""
    args = [mx.nd.array(q, dtype=q.dtype) for q, _, _ in parts]
    args += [mx.nd.array(params[k], dtype='float32') for k in ('gamma', 'beta', 'mean', 'var')]
    for _, lo, hi in parts:
        args += [mx.nd.array([lo]), mx.nd.array([hi])]
    if act is not None:
        attrs = dict(attrs, **act_attrs(act))
    op = op or mx.nd.contrib.quantized_concat_batch_norm
    out = op(*args, num_args=len(parts), **{k: str(v) for k, v in attrs.items()})
    return out[0].asnumpy(), float(out[1].asscalar()), float(out[2].asscalar())


def run_reference(parts, params, act=None, **attrs):
    return ref.concat_batch_norm(parts, params['gamma'], params['beta'], params['mean'],
                                 params['var'], act=act, **attrs)


def reference_levels(parts, params, act, out_range, fix_gamma=True):
    x = np.concatenate([ref.dequantize(q, lo, hi) for q, lo, hi in parts], axis=1)
    y = ref.activate(ref.batch_norm(x, params['gamma'], params['beta'], params['mean'],
                                    params['var'], 1e-3, fix_gamma, 1), act)
    return y / ref.step('uint8' if ref.nonnegative(act) else 'int8', *out_range)


@pytest.mark.parametrize('act', ACTS, ids=str)
@pytest.mark.parametrize('calibrated', [True, False])
@pytest.mark.parametrize('channels,dtypes', [
    ((3,), ('int8',)),
    ((16, 5), ('uint8', 'int8')),
    ((7, 32, 17), ('int8', 'int8', 'uint8')),
    ((1, 2, 3, 4, 5), ('uint8',) * 5),
])
def test_matches_the_numpy_reference(rng, act, calibrated, channels, dtypes):
    parts, params = make_parts(rng, channels, dtypes)
    attrs = dict(fix_gamma=False)
    if calibrated:
        attrs.update(min_calib_range=-3.0, max_calib_range=4.0)
    q, lo, hi = run_concat_op(parts, params, act, **attrs)
    expected, elo, ehi = run_reference(parts, params, act, **attrs)
    assert (lo, hi) == pytest.approx((elo, ehi), rel=1e-5, abs=1e-6)
    levels = reference_levels(parts, params, act, (elo, ehi), fix_gamma=False)
    assert_within_one_step(q, expected, levels=levels)


@pytest.mark.parametrize('act', [None, ('relu',), ('leaky', 0.2), ('clip', 0.0, 6.0), ('gelu',)],
                         ids=str)
@pytest.mark.parametrize('calibrated', [True, False])
@pytest.mark.parametrize('dtype', ['int8', 'uint8'])
def test_one_part_is_the_single_input_op_bit_for_bit(rng, act, calibrated, dtype):
    case = make_case(rng, (2, 19, 4, 6), in_dtype=dtype)
    params = {k: case[k] for k in ('gamma', 'beta', 'mean', 'var')}
    attrs = dict(min_calib_range=-2.5, max_calib_range=3.5) if calibrated else {}
    ours = run_concat_op([(case['q'], case['min_data'], case['max_data'])], params, act, **attrs)
    single = run_op(case, act=act, **attrs) if act else run_op(case, **attrs)
    np.testing.assert_array_equal(ours[0], single[0])
    assert ours[1:] == single[1:]


def test_each_part_keeps_its_own_step(rng):
    """The reason for the op: a part in a 30x smaller range keeps its fine
    steps, where after MXNet's int8 concat (every part rescaled to the
    largest range first) the BatchNorm amplifies the coarse ones."""
    small = rng.integers(-127, 128, size=(2, 8, 6, 6)).astype('int8')
    large = rng.integers(-127, 128, size=(2, 8, 6, 6)).astype('int8')
    parts = [(small, -0.1, 0.1), (large, -3.0, 3.0)]
    # The small part's channels have a small variance: BN scales them up 30x.
    var = np.r_[np.full(8, 0.1 / 3.0) ** 2, np.ones(8)] - 1e-3
    params = dict(gamma=np.ones(16, np.float32), beta=np.zeros(16, np.float32),
                  mean=np.zeros(16, np.float32), var=var.astype(np.float32))
    calib = dict(min_calib_range=-3.0, max_calib_range=3.0)
    ours, lo, hi = run_concat_op(parts, params, **calib)
    x = np.concatenate([ref.dequantize(q, a, b) for q, a, b in parts], axis=1)
    truth = ref.batch_norm(x, params['gamma'], params['beta'], params['mean'], params['var'],
                           1e-3, True, 1)
    # MXNet's concat: the small part requantized into the range [-3, 3].
    rescaled = np.clip(np.rint(small / 30.0), -128, 127).astype('int8')
    after_concat, _, _ = run_concat_op([(np.concatenate([rescaled, large], axis=1), -3.0, 3.0)],
                                       params, **calib)

    def sqnr(q):
        y = ref.dequantize(q, lo, hi)[:, :8]
        return 10 * np.log10(np.sum(truth[:, :8] ** 2) / np.sum((truth[:, :8] - y) ** 2))

    assert sqnr(ours) > 40 and sqnr(ours) > sqnr(after_concat) + 25, (sqnr(ours),
                                                                       sqnr(after_concat))
    np.testing.assert_array_equal(ours[:, 8:], after_concat[:, 8:])  # the large part: the same


@pytest.mark.parametrize('attrs,match', [
    (dict(), 'num_args .* is required'),
    (dict(num_args='0'), 'num_args must be an integer from 1 to 1024'),
    (dict(num_args='two'), 'num_args must be an integer'),
    (dict(num_args='2', dim='x'), "cannot parse attribute dim='x'"),
    (dict(num_args='2', dim='2'), "dim 2 must be the BatchNorm's axis 1"),
    (dict(num_args='2', a_min='0'), 'act_type is required'),
    (dict(num_args='2', act_type='swish'), "unsupported act_type 'swish'"),
    (dict(num_args='2', no_such_key='1'), "unknown attribute 'no_such_key'"),
])
def test_bad_attributes_are_clear_errors(rng, attrs, match):
    parts, params = make_parts(rng, (3, 4), ('int8', 'int8'))
    args = [mx.nd.array(q, dtype=q.dtype) for q, _, _ in parts]
    args += [mx.nd.array(params[k]) for k in ('gamma', 'beta', 'mean', 'var')]
    args += [mx.nd.array([v]) for _, lo, hi in parts for v in (lo, hi)]
    with pytest.raises(mx.MXNetError, match=match):
        mx.nd.contrib.quantized_concat_batch_norm(*args, **attrs)[0].asnumpy()


def test_bad_inputs_are_clear_errors(rng):
    parts, params = make_parts(rng, (3, 4), ('int8', 'uint8'))
    # Parts that differ outside the channel axis.
    bad = [parts[0], (parts[1][0][:, :, :2], parts[1][1], parts[1][2])]
    with pytest.raises(mx.MXNetError, match='cannot be concatenated with data_0'):
        run_concat_op(bad, params)
    # Parameters for another channel count.
    short = {k: v[:5] for k, v in params.items()}
    with pytest.raises(mx.MXNetError, match='expected'):
        run_concat_op(parts, short)
    # float32 data.
    floats = [(parts[0][0].astype(np.float32), -1.0, 1.0), parts[1]]
    with pytest.raises(mx.MXNetError, match='data_0 must be int8 or uint8, got float32'):
        run_concat_op(floats, params)
    # A range the parameters cannot fold.
    with pytest.raises(mx.MXNetError, match=r'concatenated input 1 \(channels from 3\): '
                                            r'min_data \(2.0+\) is greater than max_data'):
        run_concat_op([parts[0], (parts[1][0], 2.0, 1.0)], params)
    # The process lives on, and the op still computes.
    q, _, _ = run_concat_op(parts, params, min_calib_range=-1.0, max_calib_range=1.0)
    expected, _, _ = run_reference(parts, params, min_calib_range=-1.0, max_calib_range=1.0)
    assert_within_one_step(q, expected)


# _contrib_quantized_concat_avg_pool_batch_norm (_global_avg_pool): an
# average pooling between the concat and the BatchNorm, each part pooled in
# its own range.
AVG_POOLINGS = [dict(kernel=(2, 2), stride=(2, 2)),
                dict(kernel=(3, 3), stride=(2, 2), pad=(1, 1), count_include_pad=False),
                dict(kernel=(3, 2), stride=(1, 2))]


def run_concat_avg_pool_op(parts, params, act, pooling, head=False, **attrs):
    op = (mx.nd.contrib.quantized_concat_avg_pool_batch_norm_global_avg_pool if head
          else mx.nd.contrib.quantized_concat_avg_pool_batch_norm)
    return run_concat_op(parts, params, act, op=op, **dict(attrs, **pooling))


# The head op takes the mean in levels: no curve (its refusal is tested below).
HEAD_AND_ACTS = [(False, act) for act in ACTS] + [
    (True, act) for act in ACTS if act is None or act[0] not in ('tanh', 'sigmoid')]


@pytest.mark.parametrize('head,act', HEAD_AND_ACTS, ids=str)
@pytest.mark.parametrize('calibrated', [True, False])
@pytest.mark.parametrize('pooling', AVG_POOLINGS, ids=str)
@pytest.mark.parametrize('channels,dtypes', [
    ((3,), ('uint8',)),
    ((16, 5), ('uint8', 'int8')),
    ((7, 32, 17), ('int8', 'int8', 'uint8')),
])
def test_avg_pool_forms_match_the_numpy_reference(rng, head, act, calibrated, pooling, channels,
                                                  dtypes):
    """BN(+act) of the real window means of the real concatenation (then,
    head, their mean over H and W), quantized once; uint8 where the
    activation cannot be negative."""
    parts, params = make_parts(rng, channels, dtypes, spatial=(7, 9))
    attrs = dict(fix_gamma=False)
    if calibrated:
        attrs.update(min_calib_range=-2.0, max_calib_range=3.0)
    q, lo, hi = run_concat_avg_pool_op(parts, params, act, pooling, head, **attrs)
    expected, elo, ehi = run_reference(parts, params, act, pooling=pooling, head=head, **attrs)
    assert q.shape == expected.shape and q.dtype == expected.dtype
    assert (lo, hi) == pytest.approx((elo, ehi), rel=1e-5, abs=1e-6)
    assert_within_one_step(q, expected)


@pytest.mark.parametrize('head', [False, True])
@pytest.mark.parametrize('act', [None, ('relu',), ('clip', -1.0, 1.5), ('leaky', 0.2)], ids=str)
@pytest.mark.parametrize('dtype', ['int8', 'uint8'])
def test_one_part_avg_pool_is_the_single_input_op_bit_for_bit(rng, head, act, dtype):
    """One input: the bits of _contrib_quantized_avg_pool_batch_norm (_global_avg_pool)."""
    case = make_case(rng, (2, 19, 8, 6), in_dtype=dtype)
    params = {k: case[k] for k in ('gamma', 'beta', 'mean', 'var')}
    pooling = dict(kernel=(2, 2), stride=(2, 2))
    attrs = dict(min_calib_range=-1.5, max_calib_range=2.5, **pooling)
    ours = run_concat_avg_pool_op([(case['q'], case['min_data'], case['max_data'])], params, act,
                                  pooling, head, min_calib_range=-1.5, max_calib_range=2.5)
    op = (mx.nd.contrib.quantized_avg_pool_batch_norm_global_avg_pool if head
          else mx.nd.contrib.quantized_avg_pool_batch_norm)
    args = [mx.nd.array(case['q'], dtype=dtype)]
    args += [mx.nd.array(params[k]) for k in ('gamma', 'beta', 'mean', 'var')]
    args += [mx.nd.array([case['min_data']]), mx.nd.array([case['max_data']])]
    single = op(*args, **{k: str(v) for k, v in dict(attrs, **act_attrs(act) if act else {})
                          .items()})
    np.testing.assert_array_equal(ours[0], single[0].asnumpy())
    assert ours[1:] == (float(single[1].asscalar()), float(single[2].asscalar()))


@pytest.mark.parametrize('attrs,match', [
    (dict(pool_type='max'), "pool_type must be 'avg'"),
    (dict(axis='2', dim='2'), 'axis and dim must be 1'),
    (dict(kernel=(9, 9)), 'kernel is larger than the padded input'),
    (dict(act_type='tanh', head=True), "act_type 'tanh' cannot be fused with global average"),
])
def test_avg_pool_forms_bad_attributes_are_clear_errors(rng, attrs, match):
    parts, params = make_parts(rng, (3, 4), ('int8', 'uint8'))
    attrs = dict(attrs)
    head = attrs.pop('head', False)
    pooling = dict(kernel=attrs.pop('kernel', (2, 2)), stride=(2, 2))
    act = (attrs.pop('act_type'),) if 'act_type' in attrs else None
    with pytest.raises(mx.MXNetError, match=match):
        run_concat_avg_pool_op(parts, params, act, pooling, head, **attrs)


def test_avg_pool_forms_bad_inputs_are_clear_errors_and_the_op_still_runs(rng):
    parts, params = make_parts(rng, (3, 4), ('int8', 'uint8'), spatial=(6, 6, 2))
    pooling = dict(kernel=(2, 2), stride=(2, 2))
    with pytest.raises(mx.MXNetError, match='expects 4-D NCHW data'):
        run_concat_avg_pool_op(parts, params, None, pooling)
    parts, params = make_parts(rng, (3, 4), ('int8', 'uint8'), spatial=(6, 6))
    with pytest.raises(mx.MXNetError, match='expected'):
        run_concat_avg_pool_op(parts, {k: v[:5] for k, v in params.items()}, None, pooling)
    q, _, _ = run_concat_avg_pool_op(parts, params, ('relu',), pooling, fix_gamma=False)
    assert q.dtype == np.uint8 and q.shape == (2, 7, 3, 3)


def quantize(sym, shape, **kwargs):
    args, aux = small_nets.random_params(sym, shape, 0)
    rng = np.random.default_rng(1)
    calib = rng.normal(0, 1, (16,) + shape[1:]).astype('f')
    x = rng.normal(0, 1, shape).astype('f')
    (truth,) = small_nets.forward(sym, args, aux, x)
    kwargs.setdefault('calib_mode', 'naive')
    qsym, qargs, qaux = mxnet_bnq.quantize_model_mkldnn(
        sym, args, aux, label_names=None, quantized_dtype='auto', regions=False,
        calib_data=mx.io.NDArrayIter(calib, batch_size=16), num_calib_examples=16, **kwargs)
    (out,) = small_nets.forward(qsym, qargs, qaux, x)
    nodes = [n for n in json.loads(qsym.tojson())['nodes'] if n['op'] != 'null']
    return nodes, small_nets.sqnr_db(truth, out)


HEADS = ['conv', 'pool', 'max_pool_mean', 'avg_pool_mean', 'avg_pool']
CONCAT_BATCH_NORM_OPS = (names.QUANTIZED_CONCAT_BATCH_NORM, names.QUANTIZED_CONCAT_BATCH_NORM_POOL,
                         names.QUANTIZED_CONCAT_AVG_POOL_BATCH_NORM,
                         names.QUANTIZED_CONCAT_AVG_POOL_BATCH_NORM_POOL)


@pytest.mark.parametrize('quantized_concat', [False, True])
@pytest.mark.parametrize('head', HEADS)
@pytest.mark.parametrize('calib_mode', ['naive', 'none'])
def test_dense_block_batchnorms_read_the_concat_parts(quantized_concat, head, calib_mode):
    """Every BatchNorm after a concat reads its parts (the second one the
    three parts of the nested concats), no concat is left, and
    quantize/dequantize stay at the network's ends.  A head after a max
    pooling of the concat reads the parts pooled in int8."""
    sym = small_nets.bn_after_concat(head, quantized_concat)
    nodes, sqnr = quantize(sym, (4, 4, 8, 8), calib_mode=calib_mode)
    ops = [n['op'] for n in nodes]
    assert not {'Concat', '_contrib_quantized_concat', 'BatchNorm', 'Activation'} & set(ops), ops
    concat_bns = [n for n in nodes if n['op'] in CONCAT_BATCH_NORM_OPS]
    assert [n['attrs']['num_args'] for n in concat_bns] == ['2', '3']
    last = {'conv': names.QUANTIZED_CONCAT_BATCH_NORM,
            'pool': names.QUANTIZED_CONCAT_BATCH_NORM_POOL,
            'max_pool_mean': names.QUANTIZED_CONCAT_BATCH_NORM_POOL,
            'avg_pool_mean': names.QUANTIZED_CONCAT_AVG_POOL_BATCH_NORM_POOL,
            'avg_pool': names.QUANTIZED_CONCAT_AVG_POOL_BATCH_NORM}[head]
    assert [n['op'] for n in concat_bns] == [names.QUANTIZED_CONCAT_BATCH_NORM, last]
    if head == 'max_pool_mean':
        assert ops.count('_contrib_quantized_pooling') == 3 + quantized_concat, ops
    for n in concat_bns:
        assert 'concat_batch_norm' in n['attrs'][names.REWRITE_ATTR], n['attrs']
        assert n['attrs']['act_type'] == 'relu'
    assert ops.count('_contrib_quantize_v2') == 1
    fp32_output = head in ('conv', 'avg_pool')  # the last conv's output is dequantized
    assert ops.count('_contrib_dequantize') == (fp32_output or calib_mode == 'none')


@pytest.mark.parametrize('quantized_concat', [False, True])
@pytest.mark.parametrize('head', HEADS)
def test_dense_block_logits_at_least_as_close_as_batchnorms_left_fp32(quantized_concat, head):
    sym = small_nets.bn_after_concat(head, quantized_concat)
    _, ours = quantize(sym, (4, 4, 8, 8))
    _, fp32_bn = quantize(sym, (4, 4, 8, 8), bn_mode='fp32')
    assert ours >= fp32_bn - 0.05, (ours, fp32_bn)


def test_report_gives_each_concat_batchnorm_its_fate():
    sym = small_nets.bn_after_concat('pool', quantized_concat=True)
    shape = (4, 4, 8, 8)
    args, aux = small_nets.random_params(sym, shape, 0)
    calib = np.random.default_rng(1).normal(0, 1, (16,) + shape[1:]).astype('f')
    qsym, _, _ = mxnet_bnq.quantize_model_mkldnn(
        sym, args, aux, calib_mode='naive', label_names=None, quantized_dtype='auto',
        calib_data=mx.io.NDArrayIter(calib, batch_size=16), num_calib_examples=16, regions=False)
    rows = mxnet_bnq.report(sym, qsym)
    fates = {r['layer']: r['fate'] for r in rows if r['kind'] == 'batch_norm'}
    assert fates == {
        'layer0_bn': 'int8 BN+ReLU, uint8 out',
        'layer1_bn': 'int8 BN+relu, uint8 out, reading 2 concatenated inputs in their own ranges',
        'bn': 'int8 BN+relu+global avg pool, uint8 out, reading 3 concatenated inputs in their '
              'own ranges'}, fates
