"""Int8 regions: whole quantized subgraphs run inside the plugin library.

The plugin's BNQ_REGIONS partitioner claims maximal connected sets of the
nodes it can run (MXNet's quantized convolutions and fully connected ops,
quantized pooling, ReLU and flatten, and the plugin's BatchNorm ops) and
replaces each by one ``_bnq_quantized_region`` node, which runs the set with
oneDNN 3.x in the layouts its primitives prefer: MXNet converts layouts only
at the region's edges.  ``partition`` runs it; ``region_report`` says what
each region holds and why every other node stayed with MXNet;
``expand_regions`` gives the graph back without regions (to inspect or run
in MXNet).
"""
import ctypes
import json

import mxnet as mx

from . import names
from .library import load

__all__ = ['partition', 'PartitionNeedsShapes', 'region_report', 'format_region_report',
           'expand_regions', 'REGION_OP', 'PARTITIONER']

PARTITIONER = names.PARTITIONER
REGION_OP = names.REGION_OP


class PartitionNeedsShapes(ValueError):
    """MXNet could not partition the graph without its input shapes."""


def partition(qsym, qarg_params, aux_params, data_shapes=None):
    """``qsym`` with its int8 regions run by the plugin: the same as
    ``qsym.optimize_for('BNQ_REGIONS', qarg_params, aux_params, ...)``.

    `data_shapes` ({name: shape} or a list of mx.io.DataDesc) lets MXNet infer
    every shape first.  Without them MXNet 1.9.1's partitioner fails on some
    graphs (an empty shape string where a region reads another op's output);
    that is a :class:`PartitionNeedsShapes`.  Parameters are not changed: a
    region quantizes and reorders the weights it is given when first run."""
    if not isinstance(qsym, mx.sym.Symbol):
        raise ValueError('qsym must be an mx.sym.Symbol, got %s' % type(qsym).__name__)
    load()
    if data_shapes:
        shapes = dict(data_shapes) if isinstance(data_shapes, dict) else \
            {d.name: tuple(d.shape) for d in data_shapes}
        return qsym.optimize_for(PARTITIONER, qarg_params, aux_params, shape_dict=shapes)
    try:
        return qsym.optimize_for(PARTITIONER, qarg_params, aux_params, skip_infer=True)
    except mx.MXNetError as err:
        if 'substr' not in str(err):
            raise
        raise PartitionNeedsShapes(
            'MXNet cannot partition this graph into regions without its input shapes; '
            'pass data_shapes, e.g. {"data": (1, 3, 224, 224)} (%s)' % str(err).strip()) from err


def _claim_reasons(sym_json):
    """{node name: reason} for the op nodes the partitioner leaves to MXNet."""
    lib = ctypes.CDLL(load())
    lib.bnq_region_claim_report.restype = ctypes.c_char_p
    lib.bnq_region_claim_report.argtypes = [ctypes.c_char_p]
    reasons = json.loads(lib.bnq_region_claim_report(sym_json.encode()).decode())
    if '__error__' in reasons:
        raise ValueError('not a symbol JSON: %s' % reasons['__error__'])
    return reasons


def _op_counts(nodes):
    counts = {}
    for node in nodes:
        if node['op'] != 'null':
            counts[node['op']] = counts.get(node['op'], 0) + 1
    return counts


def region_report(qsym):
    """What the partitioner does with a quantized symbol (partitioned or not):
    ``{'regions': [{'node', 'ops', 'op_counts'}], 'left_to_mxnet': [{'node',
    'op', 'reason'}]}``.  For a symbol not yet partitioned, the nodes a region
    would run are listed as one entry per op type under 'claimable'."""
    text = qsym if isinstance(qsym, str) else qsym.tojson()
    nodes = json.loads(text)['nodes']
    reasons = _claim_reasons(text)
    regions, left, claimable = [], [], []
    for node in nodes:
        if node['op'] == 'null':
            continue
        if node['op'] == REGION_OP:
            inner = node['subgraphs'][0]['nodes']
            ops = _op_counts(inner)
            regions.append({'node': node['name'], 'ops': sum(ops.values()), 'op_counts': ops})
        elif node['name'] in reasons:
            left.append({'node': node['name'], 'op': node['op'], 'reason': reasons[node['name']]})
        else:
            claimable.append(node)
    report = {'regions': regions, 'left_to_mxnet': left}
    if claimable:
        report['claimable'] = _op_counts(claimable)
    return report


def format_region_report(report):
    """The region report as Markdown."""
    lines = ['| region | ops | op types |', '|---|---|---|']
    for r in report['regions']:
        kinds = ', '.join('%s x%d' % kv for kv in sorted(r['op_counts'].items()))
        lines.append('| %s | %d | %s |' % (r['node'], r['ops'], kinds))
    if report['left_to_mxnet']:
        lines += ['', '| left to MXNet | op | why |', '|---|---|---|']
        lines += ['| %s | %s | %s |' % (n['node'], n['op'], n['reason'])
                  for n in report['left_to_mxnet']]
    return '\n'.join(lines)


def expand_regions(sym):
    """The symbol with every region node replaced by the nodes it holds
    (their own MXNet and plugin ops): the graph as it was before partitioning."""
    graph = json.loads(sym if isinstance(sym, str) else sym.tojson())
    if not any(n['op'] == REGION_OP for n in graph['nodes']):
        return sym if not isinstance(sym, str) else mx.sym.load_json(sym)
    nodes, new_index = [], {}      # outer index -> index in `nodes` (non-region nodes)
    region_heads = {}               # outer region index -> [entries of its outputs]
    for i, node in enumerate(graph['nodes']):
        remap = [_remap(e, new_index, region_heads) for e in node.get('inputs', [])]
        if node['op'] != REGION_OP:
            copy = dict(node, inputs=remap)
            new_index[i] = len(nodes)
            nodes.append(copy)
            continue
        inner = node['subgraphs'][0]
        inner_index, arg = {}, 0
        for j, sub in enumerate(inner['nodes']):
            if sub['op'] == 'null':  # the region's inputs, in order
                inner_index[j] = ('outer', remap[arg])
                arg += 1
                continue
            sub_inputs = [_inner_entry(e, inner_index) for e in sub.get('inputs', [])]
            inner_index[j] = ('new', len(nodes))
            nodes.append(dict(sub, inputs=sub_inputs))
        region_heads[i] = [_inner_entry(h, inner_index) for h in inner['heads']]
    heads = [_remap(h, new_index, region_heads) for h in graph['heads']]
    arg_nodes = [k for k, n in enumerate(nodes) if n['op'] == 'null']
    out = {'nodes': nodes, 'arg_nodes': arg_nodes, 'heads': heads,
           'node_row_ptr': list(range(len(nodes) + 1)), 'attrs': graph.get('attrs', {})}
    return mx.sym.load_json(json.dumps(out))


def _remap(entry, new_index, region_heads):
    node, index = entry[0], entry[1]
    if node in region_heads:
        return region_heads[node][index]
    return [new_index[node], index, 0]


def _inner_entry(entry, inner_index):
    kind, where = inner_index[entry[0]]
    if kind == 'outer':
        return where
    return [where, entry[1], 0]
