"""Independent numpy reference of MXNet 1.9.1's quantized convolution numerics
(the fused `_sg_mkldnn_conv`, calibrated or with int32 output between
uncalibrated quantize and requantize) and of its tensor-wise
quantized fully connected op (`_sg_mkldnn_fully_connected`), written from the
formulas in REGION-FACTS / mkldnn_conv.cc / mkldnn_fc.cc, not from the
library's code.
Float32 steps are done in numpy float32 where MXNet computes in float."""
import numpy as np
from scipy.special import erf

F = np.float32
INT32_MAX_F = F(2147483647)  # 2^31 as a float, as MXNet's MaxValue<int32_t>() becomes
RANGE = {'int8': F(127.5), 'uint8': F(255.5)}
LIMITS = {'int8': (-128, 127), 'uint8': (0, 255)}


def quantize_scale(dtype, lo, hi):
    m = max(abs(F(lo)), abs(F(hi)))
    return RANGE[dtype] / F(m) if m != 0 else INT32_MAX_F


def fold_batch_norm(w, b, gamma, beta, mean, var, eps, fix_gamma):
    """MXNet's UpdateConvWeightBias (float alpha from a double sqrt)."""
    oc = w.shape[0]
    w2, b2 = np.empty_like(w, dtype=F), np.empty(oc, F)
    for c in range(oc):
        g = 1.0 if fix_gamma else float(F(gamma[c]))
        alpha = F(g / np.sqrt(np.float64(F(var[c])) + eps))
        b2[c] = (F(beta[c]) + alpha * (F(b[c]) - F(mean[c]))) if b is not None \
            else F(beta[c]) - alpha * F(mean[c])
        w2[c] = w[c].astype(F) * alpha
    return w2, b2


def quantize_weights(w, b, data_scale):
    """Per-channel int8 weights, int32 bias, weight scales (calibrated conv)."""
    oc = w.shape[0]
    ws = np.empty(oc, F)
    for c in range(oc):
        m = F(np.abs(w[c]).max())
        s = F(127.5) / m if m != 0 else INT32_MAX_F
        if b is not None and b[c] != 0:
            limit = INT32_MAX_F if b[c] > 0 else F(-2147483648.0)
            s = min(s, limit / F(2) / F(b[c]) / F(data_scale))
        ws[c] = s
    wq = np.clip(np.rint(w.astype(F) * ws.reshape(-1, *([1] * (w.ndim - 1)))), -128, 127)
    bq = None
    if b is not None:
        bq = np.clip(np.rint(b.astype(F) * (ws * F(data_scale))), -2**31, 2**31 - 1)
    return wq.astype(np.int64), (None if bq is None else bq.astype(np.int64)), ws


def conv2d_int(q, wq, stride, pad, dilate, groups):
    """Exact integer NCHW convolution (int64 accumulation)."""
    n, ic, h, w = q.shape
    oc, icg, kh, kw = wq.shape
    x = np.pad(q.astype(np.int64), ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])))
    oh = (h + 2 * pad[0] - (dilate[0] * (kh - 1) + 1)) // stride[0] + 1
    ow = (w + 2 * pad[1] - (dilate[1] * (kw - 1) + 1)) // stride[1] + 1
    out = np.zeros((n, oc, oh, ow), np.int64)
    ocg = oc // groups
    for g in range(groups):
        xs = x[:, g * icg:(g + 1) * icg]
        for i in range(kh):
            for j in range(kw):
                patch = xs[:, :, i * dilate[0]:i * dilate[0] + stride[0] * (oh - 1) + 1:stride[0],
                           j * dilate[1]:j * dilate[1] + stride[1] * (ow - 1) + 1:stride[1]]
                wg = wq[g * ocg:(g + 1) * ocg, :, i, j]
                out[:, g * ocg:(g + 1) * ocg] += np.einsum('nchw,oc->nohw', patch, wg)
    return out


def quantized_conv(q_in, in_range, w, b, calib_range, out_dtype, stride, pad, dilate=(1, 1),
                   groups=1, bn=None, relu=False, sum_q=None, sum_range=None,
                   postsum_relu=False, act=None):
    """int8/uint8 output of MXNet's calibrated fused convolution; `sum_q` is read
    in its own type (the right result, also for a uint8 operand).  `act`:
    ('leaky', slope), ('clip', a_max) or ('gelu',) (of the real values, the
    right result) instead of `relu`."""
    w = w.astype(F)
    b = None if b is None else b.astype(F)
    if bn is not None:
        w, b = fold_batch_norm(w, b, **bn)
    ds = quantize_scale(str(q_in.dtype), *in_range)
    wq, bq, ws = quantize_weights(w, b, ds)
    os_ = quantize_scale(out_dtype, *calib_range)
    rq = (F(os_) / F(ds)) / ws
    acc = conv2d_int(q_in, wq, stride, pad, dilate, groups).astype(F)
    y = acc * rq.reshape(1, -1, 1, 1)
    if bq is not None:
        y = y + (bq.astype(F) * rq).reshape(1, -1, 1, 1)
    if relu:
        y = np.maximum(y, F(0))
    if act is not None and act[0] == 'leaky':
        y = np.where(y > 0, y, y * F(act[1]))
    if act is not None and act[0] == 'gelu':  # of the real values: y / output scale
        real = y * (F(1) / F(os_))
        y = (F(0.5) * real * (F(1) + erf(real / F(np.sqrt(2))).astype(F))) * F(os_)
    if act is not None and act[0] == 'clip':  # in output units: a_max * output scale
        y = np.clip(y, F(0), F(act[1]) * F(os_))
    if sum_q is not None:
        sum_scale = F(os_) / quantize_scale(str(sum_q.dtype), *sum_range)
        y = y + F(sum_scale) * sum_q.astype(F)
    if postsum_relu:
        y = np.maximum(y, F(0))
    lo, hi = LIMITS[out_dtype]
    return np.clip(np.rint(y), lo, hi).astype(out_dtype)


def quantize_measured(x):
    """MXNet's uncalibrated quantize_v2 (int8): the range is the data's own."""
    real = max(abs(F(x.min())), abs(F(x.max())))
    q = np.clip(np.rint(x.astype(F) * (RANGE['int8'] / F(real))), -128, 127).astype(np.int8)
    return q, (-real, real)


def uncalibrated_conv(q_in, in_range, w, b, stride, pad, dilate=(1, 1), groups=1, relu=False):
    """int32 output and range of MXNet's uncalibrated fused convolution: one
    weight scale for the tensor, the bias at data scale x weight scale, and the
    range of one weight level times one data level times INT32_MAX."""
    ds = quantize_scale(str(q_in.dtype), *in_range)
    w_abs = F(np.abs(w.astype(F)).max())
    ws = F(127.5) / w_abs
    wq = np.clip(np.rint(w.astype(F) * ws), -128, 127).astype(np.int64)
    acc = conv2d_int(q_in, wq, stride, pad, dilate, groups)
    if b is not None:
        acc = acc + np.rint(b.astype(F) * (ws * ds)).astype(np.int64).reshape(1, -1, 1, 1)
    if relu:
        acc = np.maximum(acc, 0)
    levels = {'int8': F(127), 'uint8': F(255)}[str(q_in.dtype)]
    top = (w_abs / F(127)) * (max(abs(F(in_range[0])), abs(F(in_range[1]))) / levels) * INT32_MAX_F
    return acc, (-top, top)


def requantize_measured(acc, in_range):
    """MXNet's uncalibrated requantize to int8: the range of the int32 data's
    largest magnitude, in levels of 127 (not 127.5)."""
    in_abs = max(abs(F(in_range[0])), abs(F(in_range[1])))
    data_range = F(np.abs(acc).max())
    real = data_range * in_abs / F(2147483648.0)
    scale = (in_abs / F(2147483648.0)) * (F(127) / real)
    q = np.clip(np.rint(acc.astype(F) * scale), -128, 127).astype(np.int8)
    return q, (-real, real)


def round_away(x):
    """std::round: halves away from zero."""
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def quantized_fully_connected(q_in, in_range, w8, w_range, b8, b_range, calib_range=None,
                              relu=False):
    """MXNet's quantized FC with int8 weights/bias quantized offline: float
    output without `calib_range`, else int8 (uint8 after a fused ReLU, which
    MXNet applies before the output scale)."""
    ds = quantize_scale(str(q_in.dtype), *in_range)
    ws = quantize_scale('int8', *w_range)
    wq = w8.astype(np.int64)
    bias = np.zeros(w8.shape[0], np.int64)
    if b8 is not None:
        bs = quantize_scale('int8', *b_range)
        rescale = F(ds * ws / bs)
        max_rescale = INT32_MAX_F / F(2) / F(max(abs(F(b_range[0])), abs(F(b_range[1])))) / bs
        if rescale > max_rescale:  # MXNet shrinks the weights to keep the bias in range
            rescale = F(max_rescale)
            w_rescale = F(rescale * bs / ds / ws)
            wq = round_away(w8.astype(F) * w_rescale).astype(np.int64)
            ws = F(ws * w_rescale)
        bias = round_away(b8.astype(F) * rescale).astype(np.int64)
    acc = (q_in.reshape(q_in.shape[0], -1).astype(np.int64) @ wq.T + bias).astype(F)
    if calib_range is None:
        return acc * (F(1.0 / np.float64(ds)) / ws)
    out_dtype = 'uint8' if relu else 'int8'
    os_ = quantize_scale(out_dtype, *calib_range)
    if relu:
        y = F(os_) * np.maximum(acc * (F(1.0 / np.float64(ds)) / ws), F(0))
    else:
        y = acc * ((F(os_) / F(ds)) / ws)
    lo, hi = LIMITS[out_dtype]
    return np.clip(np.rint(y), lo, hi).astype(out_dtype)


def channel_wise_fully_connected(q_in, in_range, w, b, calib_range=None, relu=False):
    """MXNet's channel-wise quantized FC (channel_wise_quantize): float weights
    and bias quantized per output channel as a calibrated convolution's, then
    the output scales of the tensor-wise op divided by each channel's weight
    scale."""
    ds = quantize_scale(str(q_in.dtype), *in_range)
    wq, bq, ws = quantize_weights(w.astype(F), None if b is None else b.astype(F), ds)
    acc = q_in.reshape(q_in.shape[0], -1).astype(np.int64) @ wq.T
    if bq is not None:
        acc = acc + bq
    acc = acc.astype(F)
    inverse = F(1.0 / np.float64(ds))
    if calib_range is None:
        return acc * (inverse / ws)
    out_dtype = 'uint8' if relu else 'int8'
    os_ = quantize_scale(out_dtype, *calib_range)
    if relu:
        y = F(os_) * np.maximum(acc * (inverse / ws), F(0))
    else:
        y = acc * ((F(os_) / F(ds)) / ws)
    lo, hi = LIMITS[out_dtype]
    return np.clip(np.rint(y), lo, hi).astype(out_dtype)
