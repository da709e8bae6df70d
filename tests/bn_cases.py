"""Helpers to build quantized BatchNorm inputs and call the ops imperatively."""
import mxnet as mx
import numpy as np
import quant_reference as ref


def make_case(rng, shape, axis=1, in_dtype='int8', data_range=4.0, channel_params=None):
    """Random quantized data plus BatchNorm parameters for `shape`."""
    channels = shape[axis % len(shape)]
    lo, hi = ref.LIMITS[in_dtype]
    q = rng.integers(lo, hi + 1, size=shape).astype(in_dtype)
    min_data = 0.0 if in_dtype == 'uint8' else -data_range
    if channel_params is None:
        channel_params = dict(
            gamma=rng.uniform(0.2, 2.0, channels).astype(np.float32),
            beta=rng.normal(0, 1, channels).astype(np.float32),
            mean=rng.normal(0, 1, channels).astype(np.float32),
            var=rng.uniform(0.05, 3.0, channels).astype(np.float32))
    return dict(q=q, min_data=min_data, max_data=data_range, **channel_params)


def act_attrs(act):
    """The _act ops' attributes for a reference activation tuple."""
    if act[0] == 'clip':
        return dict(act_type='clip', a_min=act[1], a_max=act[2])
    if act[0] == 'leaky':
        return dict(act_type='leaky', slope=act[1])
    return dict(act_type=act[0])


def run_op(case, relu=False, pool=False, act=None, **attrs):
    """Calls the plugin op (BN, BN+ReLU, BN+ReLU+global average pooling, or
    BN + the activation `act`, a reference tuple, pooled too with `pool`);
    returns numpy (q_out, min_out, max_out)."""
    if act is not None:
        op = (mx.nd.contrib.quantized_batch_norm_act_global_avg_pool if pool else
              mx.nd.contrib.quantized_batch_norm_act)
        attrs = dict(attrs, **act_attrs(act))
    elif pool:
        op = mx.nd.contrib.quantized_batch_norm_relu_global_avg_pool
    else:
        op = mx.nd.contrib.quantized_batch_norm_relu if relu else mx.nd.contrib.quantized_batch_norm
    args = [mx.nd.array(case['q'], dtype=case['q'].dtype)]
    args += [mx.nd.array(case[k], dtype='float32') for k in ('gamma', 'beta', 'mean', 'var')]
    args += [mx.nd.array([case['min_data']]), mx.nd.array([case['max_data']])]
    out = op(*args, **{k: str(v) for k, v in attrs.items()})
    return out[0].asnumpy(), float(out[1].asscalar()), float(out[2].asscalar())


def reference_levels(case, act, out_range, **attrs):
    """The reference's BN+act values in output levels of `out_range` (min, max), unrounded."""
    params = dict(ref.BN_DEFAULTS)
    params.update({k: v for k, v in attrs.items() if k in params})
    y = ref.batch_norm(ref.dequantize(case['q'], case['min_data'], case['max_data']),
                       case['gamma'], case['beta'], case['mean'], case['var'], **params)
    dtype = 'uint8' if ref.nonnegative(act) else 'int8'
    return ref.activate(y, act) / ref.step(dtype, *out_range)


def run_reference(case, relu=False, act=None, **attrs):
    params = dict(ref.BN_DEFAULTS)
    params.update(attrs)
    return ref.quantized_batch_norm(case['q'], case['gamma'], case['beta'], case['mean'],
                                    case['var'], case['min_data'], case['max_data'], relu=relu,
                                    act=act, **params)


# How far from a rounding tie (in output levels) float32 arithmetic may move
# a value: the curves' float32 evaluation is good to a few parts in 1e6 of
# 255 levels.
TIE_TOLERANCE = 2e-3


def assert_within_one_step(actual, expected, max_off_by_one_fraction=0.01, levels=None):
    """At most one step off anywhere, and off by one only at rare rounding
    ties; given the reference's unrounded `levels`, off by one only within
    TIE_TOLERANCE of a tie (however many values sit there: a saturating
    curve puts many at the range's end, a tie when the range is the curve's
    bound)."""
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    assert actual.shape == expected.shape
    diff = np.abs(actual.astype(np.int32) - expected.astype(np.int32))
    assert diff.max(initial=0) <= 1, 'max difference %d steps' % diff.max()
    if levels is not None:
        off = np.asarray(levels, np.float64)[diff != 0]
        distance = np.abs(off - np.floor(off) - 0.5)
        assert distance.max(initial=0) < TIE_TOLERANCE, (
            'off by one %.4f levels from a tie' % distance.max())
        return
    allowed = max(1, int(max_off_by_one_fraction * diff.size))
    assert np.count_nonzero(diff) <= allowed, '%d of %d values off by one' % (
        np.count_nonzero(diff), diff.size)
