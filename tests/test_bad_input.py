"""Bad input gives a clear MXNetError naming the problem; the process lives on."""
import mxnet as mx
import numpy as np
import pytest
from bn_cases import make_case, run_op


def call(data, channel_arrays, min_data, max_data, relu=False, **attrs):
    op = mx.nd.contrib.quantized_batch_norm_relu if relu else mx.nd.contrib.quantized_batch_norm
    out = op(data, *channel_arrays, mx.nd.array(min_data), mx.nd.array(max_data), **attrs)
    return [o.asnumpy() for o in out]


def good_inputs(channels=3, shape=(2, 3, 4, 4)):
    data = mx.nd.array(np.ones(shape), dtype='int8')
    params = [mx.nd.ones(channels) for _ in range(4)]
    return data, params


def assert_clean_error(match, fn, *args, **kwargs):
    with pytest.raises(mx.MXNetError, match=match) as info:
        fn(*args, **kwargs)
    # Only this failure is reported, not earlier ones.
    assert str(info.value).count('_contrib_quantized_batch_norm') <= 3


@pytest.mark.parametrize('relu', [False, True])
@pytest.mark.parametrize('attrs,match', [
    (dict(eps='abc'), "cannot parse attribute eps='abc'"),
    (dict(eps='1e-3x'), "cannot parse attribute eps"),
    (dict(eps='nan'), "cannot parse attribute eps"),
    (dict(eps='0x10'), "cannot parse attribute eps='0x10'"),
    (dict(eps='inf'), "cannot parse attribute eps"),
    (dict(axis='one'), "cannot parse attribute axis='one'"),
    (dict(axis='1.5'), "cannot parse attribute axis"),
    (dict(fix_gamma='maybe'), "cannot parse attribute fix_gamma='maybe'"),
    (dict(min_calib_range='-1', max_calib_range='x'), 'cannot parse attribute max_calib_range'),
    (dict(min_calib_range='inf', max_calib_range='1'), 'cannot parse attribute min_calib_range'),
    (dict(min_calib_range='1'), 'must be given together'),
    (dict(min_calib_range='2', max_calib_range='1'), 'greater than max_calib_range'),
    (dict(no_such_key='1'), "unknown attribute 'no_such_key'"),
    (dict(axis=4), 'axis 4 is out of range for data of shape'),
    (dict(axis=-5), 'axis -5 is out of range'),
])
def test_malformed_attributes(relu, attrs, match):
    data, params = good_inputs()
    assert_clean_error(match, call, data, params, [-1.0], [1.0], relu=relu, **attrs)


@pytest.mark.parametrize('dtype', ['float32', 'int32', 'float16'])
def test_non_quantized_data(dtype):
    data, params = good_inputs()
    assert_clean_error('data must be int8 or uint8, got ' + dtype, call, data.astype(dtype),
                       params, [-1.0], [1.0])


@pytest.mark.parametrize('index,name', [(0, 'gamma'), (1, 'beta'), (2, 'moving_mean'),
                                        (3, 'moving_var')])
def test_wrong_channel_parameter_shape(index, name):
    data, params = good_inputs()
    params[index] = mx.nd.ones(4)
    assert_clean_error(name + r' has shape \(4,\), expected \(3,\)', call, data, params,
                       [-1.0], [1.0])


def test_wrong_range_shape():
    data, params = good_inputs()
    assert_clean_error(r'min_data has shape \(2,\), expected \(1,\)', call, data, params,
                       [-1.0, 0.0], [1.0])


@pytest.mark.parametrize('lo,hi,match', [
    (1.0, -1.0, r'min_data \(1.000000\) is greater than max_data'),
    (float('nan'), 1.0, 'must be finite'),
    (-1.0, float('inf'), 'must be finite'),
    (-float('inf'), float('inf'), 'must be finite'),
])
def test_bad_input_ranges(lo, hi, match):
    data, params = good_inputs()
    assert_clean_error(match, call, data, params, [lo], [hi])


@pytest.mark.parametrize('var,eps,match', [
    (-1.0, 1e-3, 'moving_var \\+ eps'), (0.0, 0.0, 'moving_var \\+ eps'),
    (-1e-3, 1e-3, 'moving_var \\+ eps'), (float('nan'), 1e-3, 'moving_var \\+ eps'),
    (float('inf'), 1e-3, 'moving_var \\+ eps'),
])
def test_non_positive_variance(var, eps, match):
    data, params = good_inputs()
    params[3] = mx.nd.array([1.0, var, 1.0])
    assert_clean_error(match + '.* of channel 1', call, data, params, [-1.0], [1.0], eps=eps)


@pytest.mark.parametrize('index,name', [(0, 'gamma'), (1, 'beta'), (2, 'moving_mean')])
def test_non_finite_parameters(index, name):
    data, params = good_inputs()
    params[index] = mx.nd.array([1.0, 1.0, float('nan')])
    assert_clean_error(name + ' of channel 2 is nan', call, data, params, [-1.0], [1.0],
                       fix_gamma=False)


def test_zero_dim_and_empty_data():
    _, params = good_inputs()
    # Zero-size dimensions and 0-d arrays exist only in MXNet's numpy shape mode.
    with mx.np_shape(True):
        with pytest.raises(mx.MXNetError, match='data must have at least one dimension'):
            call(mx.nd.array(np.array(3), dtype='int8'), params[:1] * 4, [-1.0], [1.0], axis=0)
        with pytest.raises(mx.MXNetError, match=r'data of shape \(0, 3, 4\) is empty'):
            call(mx.nd.array(np.zeros((0, 3, 4)), dtype='int8'), params, [-1.0], [1.0])


def test_process_survives_and_later_calls_are_exact(rng):
    data, params = good_inputs()
    for _ in range(20):
        with pytest.raises(mx.MXNetError):
            call(data, params, [1.0], [-1.0])
    case = make_case(rng, (2, 3, 4, 4))
    first = run_op(case, min_calib_range=-1, max_calib_range=1)
    with pytest.raises(mx.MXNetError):
        call(data.astype('float32'), params, [-1.0], [1.0])
    again = run_op(case, min_calib_range=-1, max_calib_range=1)
    assert np.array_equal(first[0], again[0])


def call_float(data, relu=False, **attrs):
    op = mx.nd.contrib.batch_norm_relu_quantize if relu else mx.nd.contrib.batch_norm_quantize
    out = op(data, *[mx.nd.ones(3) for _ in range(4)], **attrs)
    return [o.asnumpy() for o in out]


@pytest.mark.parametrize('relu', [False, True])
@pytest.mark.parametrize('attrs,match', [
    (dict(), 'needs the calibrated output range'),
    (dict(min_calib_range='None', max_calib_range='None'), 'needs the calibrated output range'),
    (dict(min_calib_range='-1'), 'must be given together'),
    (dict(min_calib_range='-1', max_calib_range='1', out_type='int8'),
     "unknown attribute 'out_type'"),
])
def test_float_input_op_needs_a_calibrated_range(relu, attrs, match):
    data = mx.nd.ones((2, 3, 4, 4))
    with pytest.raises(mx.MXNetError, match=match):
        call_float(data, relu, **attrs)


@pytest.mark.parametrize('dtype', ['float16', 'float64', 'int32'])
def test_float_input_op_refuses_other_data_types(dtype):
    data = mx.nd.ones((2, 3, 4, 4), dtype=dtype)
    with pytest.raises(mx.MXNetError, match='data must be float32, uint8 or int8, got ' + dtype):
        call_float(data, min_calib_range='-1', max_calib_range='1')
