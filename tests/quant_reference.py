"""Independent numpy reference of the quantized BatchNorm arithmetic.

Written from MXNet's conventions, not from the library's code: dequantize the
input, apply BatchNorm in float64, quantize the result.  A tensor of type
int8 with range [min, max] holds q * max(|min|, |max|) / 127.5, a uint8 one
q * max(|min|, |max|) / 255.5 (MXNet's quantization_utils.h).
"""
import math

import numpy as np

QUANTIZED_RANGE = {'int8': 127.5, 'uint8': 255.5}
LIMITS = {'int8': (-128, 127), 'uint8': (0, 255)}
BN_DEFAULTS = dict(eps=1e-3, fix_gamma=True, axis=1)


def step(dtype, min_range, max_range):
    """Real value of one quantization step."""
    return max(abs(min_range), abs(max_range)) / QUANTIZED_RANGE[dtype]


def quantize(x, dtype, min_range, max_range):
    lo, hi = LIMITS[dtype]
    s = step(dtype, min_range, max_range)
    if s == 0:
        return np.zeros(x.shape, dtype)
    return np.clip(np.rint(np.asarray(x, np.float64) / s), lo, hi).astype(dtype)


def dequantize(q, min_range, max_range):
    return q.astype(np.float64) * step(str(q.dtype), min_range, max_range)


def channel_view(v, ndim, axis):
    shape = [1] * ndim
    shape[axis] = -1
    return np.asarray(v, np.float64).reshape(shape)


def batch_norm(x, gamma, beta, mean, var, eps, fix_gamma, axis):
    """Inference BatchNorm in float64 with MXNet's parameter meaning."""
    axis = axis % x.ndim
    if fix_gamma:
        gamma = np.ones_like(gamma)
    inv_std = 1.0 / np.sqrt(np.asarray(var, np.float64) + eps)
    return ((x - channel_view(mean, x.ndim, axis)) * channel_view(inv_std * gamma, x.ndim, axis)
            + channel_view(beta, x.ndim, axis))


def activate(y, act):
    """The fused activation of real values: None, ('relu',), ('clip', a_min,
    a_max), ('leaky', slope), ('sigmoid',), ('tanh',), ('softrelu',) or
    ('gelu',), as MXNet's Activation, clip and LeakyReLU define them."""
    if act is None:
        return y
    y = np.asarray(y, np.float64)
    if act[0] == 'relu':
        return np.maximum(y, 0.0)
    if act[0] == 'clip':
        return np.clip(y, act[1], act[2])
    if act[0] == 'leaky':
        return np.where(y < 0, y * act[1], y)
    if act[0] == 'sigmoid':
        return 1.0 / (1.0 + np.exp(-y))
    if act[0] == 'tanh':
        return np.tanh(y)
    if act[0] == 'softrelu':  # log(1 + e^y); MXNet returns y itself above 20
        return np.where(y > 20, y, np.log1p(np.exp(np.minimum(y, 20))))
    assert act[0] == 'gelu', act  # the erf form (LeakyReLU act_type='gelu')
    return 0.5 * y * (1.0 + erf(y / np.sqrt(2.0)))


def erf(x):
    """The error function, elementwise (numpy has none; math.erf is exact to double)."""
    return np.vectorize(math.erf, otypes=[np.float64])(x)


def nonnegative(act):
    """The activation's output cannot be negative (the op writes uint8)."""
    return act is not None and (act[0] in ('relu', 'sigmoid', 'softrelu')
                                or (act[0] == 'clip' and act[1] >= 0)
                                or (act[0] == 'leaky' and act[1] <= 0))


def derived_output_range(in_dtype, min_data, max_data, gamma, beta, mean, var, eps, fix_gamma,
                         act):
    """Output range without calibration: the extremes of the activation over
    the BatchNorm's values, found on a fine grid between the BatchNorm of the
    extreme input values (and 0)."""
    lo, hi = LIMITS[in_dtype]
    extremes = np.array([lo, hi], np.float64) * step(in_dtype, min_data, max_data)
    ys = batch_norm(np.repeat(extremes[:, None], len(mean), axis=1), gamma, beta, mean, var, eps,
                    fix_gamma, axis=1)
    lo_y, hi_y = min(ys.min(), 0.0), max(ys.max(), 0.0)
    # A grid, not the kinks: the reference knows nothing of where each curve turns.
    values = activate(np.concatenate([[lo_y, hi_y, 0.0], np.linspace(lo_y, hi_y, 200001)]), act)
    top = values.max()
    if nonnegative(act):
        return 0.0, top
    bound = max(abs(values.min()), top)
    return -bound, bound


def quantized_batch_norm(q, gamma, beta, mean, var, min_data, max_data, eps=1e-3, fix_gamma=True,
                         axis=1, min_calib_range=None, max_calib_range=None, relu=False, act=None):
    """Returns (q_out, min_output, max_output) as the ops must compute them;
    `relu` is act=('relu',)."""
    act = ('relu',) if relu else act
    in_dtype = str(q.dtype)
    y = batch_norm(dequantize(q, min_data, max_data), gamma, beta, mean, var, eps, fix_gamma, axis)
    if min_calib_range is not None:
        min_out, max_out = min_calib_range, max_calib_range
        if nonnegative(act):
            min_out, max_out = 0.0, max(max_calib_range, 0.0)
    else:
        min_out, max_out = derived_output_range(in_dtype, min_data, max_data, gamma, beta, mean,
                                                var, eps, fix_gamma, act)
    out_dtype = 'uint8' if nonnegative(act) else 'int8'
    return quantize(activate(y, act), out_dtype, min_out, max_out), min_out, max_out


def global_avg_pool(q, axis=1):
    """Mean over every dimension after the channel `axis` (global average
    pooling of NCHW data), rounded to nearest, ties to even; same type and range."""
    axis = axis % q.ndim
    inner = tuple(range(axis + 1, q.ndim))
    mean = q.astype(np.float64).mean(axis=inner, keepdims=True) if inner else q.astype(np.float64)
    lo, hi = LIMITS[str(q.dtype)]
    return np.clip(np.rint(mean), lo, hi).astype(q.dtype)


def pooled_batch_norm(q, gamma, beta, mean, var, min_data, max_data, eps=1e-3, fix_gamma=True,
                      axis=1, min_calib_range=None, max_calib_range=None, act=('relu',)):
    """BatchNorm + activation + global average pooling as the fused ops must
    compute it: the real mean of the real BN+act values, quantized once (uint8
    where the activation cannot be negative, else int8) in the calibrated range
    (the pooled output's), or without one in the range derived for the BN+act
    output.  Returns (q_out, min_output, max_output)."""
    y = activate(batch_norm(dequantize(q, min_data, max_data), gamma, beta, mean, var, eps,
                            fix_gamma, axis), act)
    axis = axis % q.ndim
    inner = tuple(range(axis + 1, q.ndim))
    pooled = y.mean(axis=inner, keepdims=True) if inner else y
    if min_calib_range is not None:
        min_out, max_out = min_calib_range, max_calib_range
        if nonnegative(act):
            min_out, max_out = 0.0, max(max_calib_range, 0.0)
    else:
        min_out, max_out = derived_output_range(str(q.dtype), min_data, max_data, gamma, beta,
                                                mean, var, eps, fix_gamma, act)
    out_dtype = 'uint8' if nonnegative(act) else 'int8'
    return quantize(pooled, out_dtype, min_out, max_out), min_out, max_out


def concat_batch_norm(parts, gamma, beta, mean, var, eps=1e-3, fix_gamma=True,
                      min_calib_range=None, max_calib_range=None, act=None, pooling=None,
                      head=False):
    """BatchNorm [+ act] over the concatenation along axis 1 of quantized
    `parts` ((q, min_data, max_data) each, in its own range), quantized once.
    With `pooling` (avg_pool's keywords) an average pooling of the real
    concatenation before the BatchNorm; with `head` the mean over H and W
    after the activation.  Without a calibrated range: the union of the
    ranges derived for each part (with its channels' parameters; every
    window mean lies within its part's range).  Returns (q_out, min_output,
    max_output)."""
    x = np.concatenate([dequantize(q, lo, hi) for q, lo, hi in parts], axis=1)
    if pooling is not None:
        x = avg_pool(x, **pooling)
    y = activate(batch_norm(x, gamma, beta, mean, var, eps, fix_gamma, axis=1), act)
    if head:
        y = y.mean(axis=(2, 3), keepdims=True)
    if min_calib_range is not None:
        min_out, max_out = min_calib_range, max_calib_range
        if nonnegative(act):
            min_out, max_out = 0.0, max(max_calib_range, 0.0)
    else:
        min_out = max_out = 0.0
        begin = 0
        for q, lo, hi in parts:
            c = slice(begin, begin + q.shape[1])
            part_lo, part_hi = derived_output_range(str(q.dtype), lo, hi, gamma[c], beta[c],
                                                    mean[c], var[c], eps, fix_gamma, act)
            min_out, max_out = min(min_out, part_lo), max(max_out, part_hi)
            begin += q.shape[1]
    out_dtype = 'uint8' if nonnegative(act) else 'int8'
    return quantize(y, out_dtype, min_out, max_out), min_out, max_out


def avg_pool(x, kernel, stride=(1, 1), pad=(0, 0), count_include_pad=True,
            global_pool=False):
    """Average pooling (valid convention) of real NCHW `x` in float64."""
    if global_pool:
        return x.mean(axis=(2, 3), keepdims=True)
    n, c, h, w = x.shape
    padded = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])))
    inside = np.pad(np.ones((h, w)), ((pad[0], pad[0]), (pad[1], pad[1])))
    oh = (h + 2 * pad[0] - kernel[0]) // stride[0] + 1
    ow = (w + 2 * pad[1] - kernel[1]) // stride[1] + 1
    out = np.zeros((n, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            rows = slice(i * stride[0], i * stride[0] + kernel[0])
            cols = slice(j * stride[1], j * stride[1] + kernel[1])
            count = kernel[0] * kernel[1] if count_include_pad else inside[rows, cols].sum()
            out[:, :, i, j] = padded[:, :, rows, cols].sum(axis=(2, 3)) / count
    return out
