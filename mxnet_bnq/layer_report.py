"""Per-layer report of what quantization did to each BatchNorm and each
activation, and where the int8 regions are.

For every BatchNorm of the fp32 model: folded into which convolution, quantized
(int8), fused with its activation (uint8 where it cannot be negative), or left
fp32 and why; for every activation: folded into a convolution, fused into a
BatchNorm op, quantized by MXNet, or left fp32 and why; and, given sample
data, the signal-to-quantization-noise ratio (dB) of its quantized output
against the fp32 model, so that a user sees which layer loses accuracy.  For a
partitioned model, one row per int8 region (its op counts) and one per node
left to MXNet, with the reason (see regions.py).
"""

import math

import numpy as np

from . import names
from .fp32_preparation import UNSHARED_SUFFIX
from .graph_runner import run_symbol, subgraph_backend
from .library import load, needs_plugin
from .names import QUANTIZED_PREFIX, REGION_OP
from .regions import expand_regions, region_report
from .symbol_graph import internal_outputs, symbol_nodes

__all__ = ['report', 'format_report', 'sqnr_db']

FATES = {
    'BatchNorm': 'fp32',
    names.QUANTIZED_BATCH_NORM: 'int8',
    names.QUANTIZED_BATCH_NORM_RELU: 'int8 BN+ReLU, uint8 out',
    names.QUANTIZED_BATCH_NORM_RELU_POOL: 'int8 BN+ReLU+global avg pool, uint8 out',
    # fp32 input, quantized output
    names.BATCH_NORM_QUANTIZE: 'int8',
    names.BATCH_NORM_RELU_QUANTIZE: 'int8 BN+ReLU, uint8 out',
    # The activation of the node's attributes (_act_fate gives the text).
    names.QUANTIZED_BATCH_NORM_ACT: None,
    names.BATCH_NORM_ACT_QUANTIZE: None,
    names.QUANTIZED_BATCH_NORM_ACT_POOL: None,
    names.BATCH_NORM_ACT_POOL_QUANTIZE: None,
    names.QUANTIZED_AVG_POOL_BATCH_NORM: None,
    names.QUANTIZED_AVG_POOL_BATCH_NORM_POOL: None,
    names.QUANTIZED_CONCAT_BATCH_NORM: None,
    names.QUANTIZED_CONCAT_BATCH_NORM_POOL: None,
    names.QUANTIZED_CONCAT_AVG_POOL_BATCH_NORM: None,
    names.QUANTIZED_CONCAT_AVG_POOL_BATCH_NORM_POOL: None,
}
# The ops that read a concat's inputs, those that read an average pooling's
# input, and those followed by a global average pooling.
CONCAT_OPS = (names.QUANTIZED_CONCAT_BATCH_NORM, names.QUANTIZED_CONCAT_BATCH_NORM_POOL,
              names.QUANTIZED_CONCAT_AVG_POOL_BATCH_NORM,
              names.QUANTIZED_CONCAT_AVG_POOL_BATCH_NORM_POOL)
AVG_POOL_IN_OPS = (names.QUANTIZED_AVG_POOL_BATCH_NORM, names.QUANTIZED_AVG_POOL_BATCH_NORM_POOL,
                   names.QUANTIZED_CONCAT_AVG_POOL_BATCH_NORM,
                   names.QUANTIZED_CONCAT_AVG_POOL_BATCH_NORM_POOL)
GLOBAL_POOL_OPS = (names.QUANTIZED_BATCH_NORM_ACT_POOL, names.BATCH_NORM_ACT_POOL_QUANTIZE,
                   names.QUANTIZED_CONCAT_BATCH_NORM_POOL, names.QUANTIZED_AVG_POOL_BATCH_NORM_POOL,
                   names.QUANTIZED_CONCAT_AVG_POOL_BATCH_NORM_POOL)


def _act_fate(attrs):
    act = attrs.get('act_type', '?')
    if act == 'clip':
        act = 'clip(%s, %s)' % (attrs.get('a_min'), attrs.get('a_max'))
        out = 'uint8' if float(attrs.get('a_min', -1)) >= 0 else 'int8'
    elif act == 'leaky':
        out = 'uint8' if float(attrs.get('slope', 0.25)) <= 0 else 'int8'
        act = 'leaky(%s)' % attrs.get('slope', '0.25')
    else:  # the curves that cannot be negative: sigmoid, softrelu
        out = 'uint8' if act in ('relu', 'sigmoid', 'softrelu') else 'int8'
    return 'int8 BN+%s, %s out' % (act, out)


def _activate(reference, attrs):
    """The fused activation of a BatchNorm+act node applied to fp32 values
    (MXNet's definitions: softrelu is the identity above 20, gelu the erf form)."""
    act = attrs.get('act_type')
    x = np.asarray(reference, np.float64)
    if act == 'clip':
        return np.clip(x, float(attrs['a_min']), float(attrs['a_max']))
    if act == 'leaky':
        return np.where(x < 0, x * float(attrs.get('slope', 0.25)), x)
    if act == 'sigmoid':
        return 1 / (1 + np.exp(-x))
    if act == 'tanh':
        return np.tanh(x)
    if act == 'softrelu':
        return np.where(x > 20, x, np.log1p(np.exp(np.minimum(x, 20))))
    if act == 'gelu':
        return 0.5 * x * (1 + np.vectorize(math.erf, otypes=[np.float64])(x / math.sqrt(2)))
    return np.maximum(x, 0) if act == 'relu' else x
QUANTIZED_RANGE = {np.dtype(t): levels for t, levels in names.QUANTIZED_RANGE.items()}


def sqnr_db(reference, approximation):
    """10 log10(signal power / noise power); inf when equal."""
    reference = np.asarray(reference, np.float64)
    noise = np.sum((reference - np.asarray(approximation, np.float64)) ** 2)
    signal = np.sum(reference ** 2)
    if noise == 0:
        return float('inf')
    return float(10 * np.log10(max(signal, 1e-300) / noise))


def _subgraph_names(node):
    names = set()
    for sub in node.get('subgraphs', []):
        for inner in sub['nodes']:
            names.add(inner['name'])
            names |= _subgraph_names(inner)
    return names


def _why_fp32(name, excluded_sym_names, excluded_op_names):
    if name in (excluded_sym_names or []):
        return 'excluded by name'
    if 'BatchNorm' in (excluded_op_names or []):
        return 'BatchNorm excluded'
    return 'not quantized by the flow'


def _fates(fp32_sym, qsym, excluded_sym_names, excluded_op_names):
    qnodes = symbol_nodes(qsym)
    by_name = {n['name']: n for n in qnodes}
    # The fused node each name inside a subgraph (e.g. a folded BatchNorm) went into.
    fused_into = {inner: sg for sg in qnodes for inner in _subgraph_names(sg)}
    rows = []
    for node in symbol_nodes(fp32_sym):
        if node['op'] != 'BatchNorm':
            continue
        name = node['name']
        qnode = by_name.get(name) or by_name.get(QUANTIZED_PREFIX + name)
        row = {'kind': 'batch_norm', 'layer': name, 'node': None, 'fate': 'removed', 'detail': ''}
        if qnode is not None and qnode['op'] in FATES:
            attrs = qnode.get('attrs', {})
            fate = FATES[qnode['op']] or (_act_fate(attrs) if 'act_type' in attrs else 'int8')
            if qnode['op'] in GLOBAL_POOL_OPS:
                head, out = fate.rsplit(', ', 1)  # not the comma of clip(a, b)
                fate = head + '+global avg pool, ' + out
            if qnode['op'] in CONCAT_OPS:
                fate += ', reading %s concatenated inputs in their own ranges' % (
                    attrs.get('num_args'))
            if qnode['op'] in AVG_POOL_IN_OPS:
                fate += ', of the exact mean of the average pooling before it'
            row.update(node=qnode['name'], fate=fate, detail=attrs.get(names.REWRITE_ATTR, ''))
            if qnode['op'] == 'BatchNorm':
                row['detail'] = _why_fp32(name, excluded_sym_names, excluded_op_names)
        elif name in fused_into:
            row.update(fate='folded into ' + fused_into[name]['op'],
                       detail=fused_into[name]['name'])
        rows.append(row)
    # Convolutions the fusion guard duplicated (see fp32_preparation.py).
    all_names = set(by_name) | set(fused_into)
    for name in sorted(n for n in all_names if n.endswith(UNSHARED_SUFFIX)):
        rows.append({'kind': 'fusion_guard', 'layer': name[:-len(UNSHARED_SUFFIX)], 'node': name,
                     'fate': 'fusion guard',
                     'detail': 'convolution duplicated: its BatchNorm is folded into one copy, '
                               'its other consumers read the other'})
    return rows


# The fp32 activations (ops and spellings) a network may have.
ACTIVATION_OPS = ('Activation', 'relu', 'sigmoid', 'tanh', 'clip', 'LeakyReLU')


def _activation_fates(fp32_sym, qsym, excluded_sym_names, excluded_op_names):
    """One row per activation of `fp32_sym`: folded into a convolution,
    fused into a BatchNorm op, quantized by MXNet, left fp32 (and why), or
    removed."""
    qnodes = symbol_nodes(qsym)
    by_name = {n['name']: n for n in qnodes}
    fused_into = {inner: sg for sg in qnodes for inner in _subgraph_names(sg)}
    fused_by_bn = {n['attrs'][names.FUSED_ACTIVATION_ATTR]: n for n in qnodes
                   if names.FUSED_ACTIVATION_ATTR in n.get('attrs', {})}
    rows = []
    for node in symbol_nodes(fp32_sym):
        if node['op'] not in ACTIVATION_OPS:
            continue
        name = node['name']
        row = {'kind': 'activation', 'layer': name, 'node': None, 'fate': 'removed', 'detail': ''}
        bn = fused_by_bn.get(name) or fused_by_bn.get(QUANTIZED_PREFIX + name)
        quantized = by_name.get(QUANTIZED_PREFIX + name)
        if bn is not None:
            row.update(node=bn['name'], fate='fused into ' + bn['op'], detail=bn['name'])
        elif name in fused_into:
            conv = fused_into[name]
            row.update(fate='folded into ' + conv['op'], detail=conv['name'])
        elif quantized is not None:
            row.update(node=quantized['name'], fate='quantized by MXNet', detail=quantized['op'])
        elif name in by_name:
            if name in (excluded_sym_names or []) or node['op'] in (excluded_op_names or []):
                why = 'excluded'
            else:
                why = 'MXNet quantizes no %s here and no BatchNorm op fused it' % node['op']
            row.update(node=name, fate='fp32', detail=why)
        rows.append(row)
    return rows


def _output_triplet(names, node):
    """Internal output names (data, min, max) of a quantized node."""
    for first in (node + '_output', node + '_output0'):
        if first in names:
            i = names.index(first)
            return names[i:i + 3]
    raise ValueError('no outputs of %s in the quantized symbol' % node)


def _dequantize(q, lo, hi):
    return q.astype(np.float64) * max(abs(float(lo)), abs(float(hi))) / QUANTIZED_RANGE[q.dtype]


def report(fp32_sym, qsym, arg_params=None, aux_params=None, qarg_params=None, qaux_params=None,
           data=None, data_name='data', excluded_sym_names=None, excluded_op_names=None):
    """List of dicts, one per BatchNorm of `fp32_sym` (kind 'batch_norm'),
    then one per activation (kind 'activation'): layer, node (in `qsym`),
    fate, detail and, when `data` (one batch, numpy) and all params are given,
    sqnr_db of that layer's quantized output against fp32 (None where the
    layer has no quantized output of its own); the last row is the model output.
    A partitioned `qsym` adds rows for its regions and for the nodes left to
    MXNet; the BatchNorm rows are measured on the graph without regions (MXNet
    runs the same ops, see README for where the two differ), the model output
    on `qsym` itself."""
    partitioned = qsym
    qsym = expand_regions(qsym)
    rows = _fates(fp32_sym, qsym, excluded_sym_names, excluded_op_names)
    rows += _activation_fates(fp32_sym, qsym, excluded_sym_names, excluded_op_names)
    rows += _region_rows(partitioned)
    for row in rows:
        row['sqnr_db'] = None
    if data is None or None in (arg_params, aux_params, qarg_params, qaux_params):
        return rows
    measured = [r for r in rows if r['kind'] == 'batch_norm' and r['fate'].startswith('int8')]
    if not measured:
        return rows
    if needs_plugin(qsym):
        load()
    qnames = qsym.get_internals().list_outputs()
    q_outputs = [n for r in measured for n in _output_triplet(qnames, r['node'])]
    fp32_outputs = [r['layer'] + '_output' for r in measured]
    # The fp32 reference runs without MXNet's fusion, which can be wrong (fp32_preparation.py).
    with subgraph_backend('NONE'):
        fp32_values = run_symbol(
            internal_outputs(fp32_sym, fp32_outputs + [fp32_sym.list_outputs()[0]]), arg_params,
            aux_params, data, data_name)
    q_values = run_symbol(internal_outputs(qsym, q_outputs), qarg_params, qaux_params, data,
                          data_name) if q_outputs else []
    q_values += run_symbol(partitioned, qarg_params, qaux_params, data, data_name)[:1]
    node_attrs = {n['name']: n.get('attrs', {}) for n in symbol_nodes(qsym)}
    for i, row in enumerate(measured):
        reference = fp32_values[i]
        attrs = node_attrs.get(row['node'], {})
        if 'act_type' in attrs:
            reference = _activate(reference, attrs)
        elif row['fate'].endswith('uint8 out'):  # the _relu ops
            reference = np.maximum(reference, 0)
        if 'global avg pool' in row['fate']:  # the BatchNorm's node also pools (NCHW)
            reference = reference.mean(axis=tuple(range(2, reference.ndim)), keepdims=True)
        row['sqnr_db'] = sqnr_db(reference, _dequantize(*q_values[3 * i:3 * i + 3]))
    rows.append({'kind': 'output', 'layer': '(model output)', 'node': qsym.list_outputs()[0],
                 'fate': '',
                 'detail': '', 'sqnr_db': sqnr_db(fp32_values[-1], q_values[-1])})
    return rows


def _region_rows(qsym):
    """Rows for the int8 regions of a partitioned symbol and the nodes left to MXNet."""
    if not any(n['op'] == REGION_OP for n in symbol_nodes(qsym)):
        return []
    regions = region_report(qsym)
    rows = []
    for r in regions['regions']:
        kinds = ', '.join('%s x%d' % kv for kv in sorted(r['op_counts'].items()))
        rows.append({'kind': 'region', 'layer': r['node'], 'node': r['node'], 'fate': 'region',
                     'detail': '%d ops: %s' % (r['ops'], kinds)})
    for n in regions['left_to_mxnet']:
        rows.append({'kind': 'left_to_mxnet', 'layer': n['node'], 'node': n['node'],
                     'fate': 'left to MXNet',
                     'detail': '%s: %s' % (n['op'], n['reason'])})
    return rows


def format_report(rows):
    """The report as a Markdown table."""
    lines = ['| layer | fate | detail | SQNR dB |', '|---|---|---|---|']
    for r in rows:
        sqnr = '' if r['sqnr_db'] is None else '%.1f' % r['sqnr_db']
        lines.append('| %s | %s | %s | %s |' % (r['layer'], r['fate'], r['detail'], sqnr))
    return '\n'.join(lines)
