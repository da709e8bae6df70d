"""Reading the tensors of a quantized graph as MXNet computes them, and the
numpy reference (conv_reference.py) of one fused convolution node of it."""
import json

import conv_reference as cref
import mxnet as mx

from mxnet_bnq.graph_runner import run_symbol


def graph(sym):
    return json.loads(sym.tojson())


def entry_values(sym, args, aux, x, entries):
    """Values (numpy) of node outputs `entries` ([node index, output index]) of `sym`."""
    g = graph(sym)
    internals = sym.get_internals()
    names = internals.list_outputs()
    picked = [internals[names[g['node_row_ptr'][e[0]] + e[1]]] for e in entries]
    return run_symbol(mx.sym.Group(picked), args, aux, x)


def _tuple(text, default, n=2):
    if text is None or text in ('()', '[]'):
        return (default,) * n
    return tuple(int(v) for v in text.strip('()[]').split(',') if v.strip())


def reference_entry(sym, args, aux, x, entry, memo=None):
    """(values, min, max) of quantized node output `entry`: the numpy reference
    for a fused convolution (recursively, so that an upstream convolution that
    MXNet gets wrong does not spoil it), MXNet's values for anything else."""
    g = graph(sym)
    node = g['nodes'][entry[0]]
    if node['op'] == '_sg_mkldnn_conv':
        out, _, _ = fused_conv_reference(sym, args, aux, x, entry[0], memo)
        return out, float(node['attrs']['min_calib_range']), float(node['attrs']['max_calib_range'])
    q, lo, hi = entry_values(sym, args, aux, x, [entry, [entry[0], 1], [entry[0], 2]])
    return q, float(lo[0]), float(hi[0])


def fused_conv_reference(sym, args, aux, x, node_index, memo=None):
    """The right int8/uint8 output of fused convolution node `node_index` of `sym`
    (calibrated), computed in numpy from its inputs (see reference_entry), and
    (step, whether MXNet computes the same).  `memo` ({}) keeps the results of
    upstream convolutions across calls on the same graph and input."""
    if memo is not None and node_index in memo:
        return memo[node_index]
    g = graph(sym)
    node = g['nodes'][node_index]
    attrs = node['attrs']
    flag = lambda k: attrs.get(k, 'false').lower() == 'true'  # noqa: E731
    inner = [n for n in node['subgraphs'][0]['nodes'] if n['op'] != 'null']
    (conv,) = [n for n in inner if n['op'] == 'Convolution']
    ca = conv['attrs']
    no_bias = ca.get('no_bias', 'False') == 'True'
    inputs = node['inputs']
    name = lambda e: g['nodes'][e[0]]['name']  # noqa: E731
    idx = 2 + (0 if no_bias else 1)
    bn = None
    if flag('with_bn'):
        (bn_node,) = [n for n in inner if n['op'] == 'BatchNorm']
        ba = bn_node['attrs']
        values = [(args[name(e)] if name(e) in args else aux[name(e)]).asnumpy()
                  for e in inputs[idx:idx + 4]]
        bn = dict(gamma=values[0], beta=values[1], mean=values[2], var=values[3],
                  eps=float(ba.get('eps', 1e-3)), fix_gamma=ba.get('fix_gamma', 'True') == 'True')
        idx += 4
    sum_entry = None
    if flag('with_sum'):
        sum_entry = inputs[idx]
        idx += 1
    q_in, lo, hi = reference_entry(sym, args, aux, x, inputs[0], memo)
    values = [q_in, [lo], [hi]]
    if sum_entry is not None:
        q_sum, sum_lo, sum_hi = reference_entry(sym, args, aux, x, sum_entry, memo)
        values += [q_sum, [sum_lo], [sum_hi]]
    postsum = flag('with_postsum_act')
    acts = [n for n in inner if n['op'] in ('Activation', 'relu', 'LeakyReLU', 'clip')]
    relu, act = False, None
    if flag('with_act'):
        a = acts[0]
        if a['op'] == 'LeakyReLU':
            act = ('leaky', float(a['attrs'].get('slope', 0.25)))
        elif a['op'] == 'clip':
            act = ('clip', float(a['attrs']['a_max']))
        else:
            relu = True
    unsigned = relu or (act is not None and act[0] == 'clip')
    out_dtype = 'uint8' if postsum or (unsigned and sum_entry is None) else 'int8'
    calib = (float(attrs['min_calib_range']), float(attrs['max_calib_range']))
    out = cref.quantized_conv(
        q_in, (lo, hi), args[name(inputs[1])].asnumpy(),
        None if no_bias else args[name(inputs[2])].asnumpy(), calib, out_dtype,
        stride=_tuple(ca.get('stride'), 1), pad=_tuple(ca.get('pad'), 0),
        dilate=_tuple(ca.get('dilate'), 1), groups=int(ca.get('num_group', 1)), bn=bn,
        relu=relu, sum_q=values[3] if sum_entry is not None else None,
        sum_range=(float(values[4][0]), float(values[5][0])) if sum_entry is not None else None,
        postsum_relu=postsum, act=act)
    step = max(abs(calib[0]), abs(calib[1])) / float(cref.RANGE[out_dtype])
    # Where MXNet 1.9.1 is wrong: grouped (not depthwise) weights quantized with
    # one scale per group instead of per channel; a sum operand whose type
    # differs from the output's, which it reads as the output type.
    groups, channels = int(ca.get('num_group', 1)), int(ca['num_filter'])
    mxnet_right = not 1 < groups < channels and \
        (sum_entry is None or str(values[3].dtype) == out_dtype)
    for e in [inputs[0]] + ([sum_entry] if sum_entry is not None else []):
        if g['nodes'][e[0]]['op'] == '_sg_mkldnn_conv':
            mxnet_right = mxnet_right and fused_conv_reference(sym, args, aux, x, e[0], memo)[2]
    if memo is not None:
        memo[node_index] = (out, step, mxnet_right)
    return out, step, mxnet_right
