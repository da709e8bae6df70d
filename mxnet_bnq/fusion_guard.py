"""Guard against a wrong fp32 fusion in MXNet 1.9.1.

When a convolution's output feeds a BatchNorm *and* something else (the
identity shortcut of a pre-activation block right after a bare conv stem, as
in gluoncv's cifar_resnet*_v2), MXNet's MKLDNN fusion still folds the
BatchNorm (and ReLU) into the convolution, and the other consumers get the
folded tensor.  No error is raised; the model is simply wrong.

``guard_shared_convolutions`` rewrites the fp32 symbol before any fusion: such
a convolution is duplicated (sharing its weights), one copy feeding the
BatchNorm alone, which MXNet then folds correctly, the other feeding the
remaining consumers.  ``check_fusion`` lets users find such layers in any
model by comparing executor outputs with and without MXNet's fusion.
"""
import json

import mxnet as mx
import numpy as np

from .graph_runner import internal_outputs, run_symbol, subgraph_backend

__all__ = ['guard_shared_convolutions', 'check_fusion', 'UNSHARED_SUFFIX']

UNSHARED_SUFFIX = '_bnq_unshared'
FOLDING_CONSUMERS = ('BatchNorm',)


def _consumers(nodes, heads):
    """{(node index, output index): [consumer node indices, or -1 for a graph output]}"""
    uses = {}
    for i, node in enumerate(nodes):
        for src, out, _ in node['inputs']:
            uses.setdefault((src, out), []).append(i)
    for src, out, _ in heads:
        uses.setdefault((src, out), []).append(-1)
    return uses


def guard_shared_convolutions(sym):
    """Returns (guarded symbol, [description of each change]).

    Every Convolution whose output feeds a BatchNorm and any other consumer
    gets a twin that takes over the other consumers.  Symbols without such a
    convolution come back unchanged."""
    graph = json.loads(sym.tojson())
    nodes, heads = graph['nodes'], graph['heads']
    uses = _consumers(nodes, heads)
    to_split = {}
    for i, node in enumerate(nodes):
        if node['op'] != 'Convolution':
            continue
        users = uses.get((i, 0), [])
        folding = [u for u in users if u >= 0 and nodes[u]['op'] in FOLDING_CONSUMERS]
        if folding and len(users) > 1:
            to_split[i] = folding[0]
    if not to_split:
        return sym, []

    new_nodes, new_index, changes = [], {}, []
    for i, node in enumerate(nodes):
        new_index[i] = len(new_nodes)
        new_nodes.append(node)
        if i in to_split:
            twin = json.loads(json.dumps(node))
            twin['name'] = node['name'] + UNSHARED_SUFFIX
            new_index[('twin', i)] = len(new_nodes)
            new_nodes.append(twin)
            changes.append('%s feeds %s and %d other consumer(s): they now read its twin %s, so '
                           'that MXNet folds %s correctly' % (
                               node['name'], nodes[to_split[i]]['name'],
                               len(uses[(i, 0)]) - 1, twin['name'], nodes[to_split[i]]['name']))

    def remap(entry, consumer):
        src, out, version = entry
        if src in to_split and out == 0 and consumer != to_split[src]:
            return [new_index[('twin', src)], out, version]
        return [new_index[src], out, version]

    for i, node in enumerate(nodes):
        node['inputs'] = [remap(e, i) for e in node['inputs']]
    for i in to_split:  # the twin reads what the original reads
        new_nodes[new_index[('twin', i)]]['inputs'] = nodes[i]['inputs']
    graph['heads'] = [remap(e, -1) for e in heads]
    graph['nodes'] = new_nodes
    graph['arg_nodes'] = [i for i, n in enumerate(new_nodes) if n['op'] == 'null']
    graph.pop('node_row_ptr', None)  # recomputed by MXNet on load
    return mx.sym.load_json(json.dumps(graph)), changes


def check_fusion(sym, arg_params, aux_params, data, data_name='data', rtol=1e-3):
    """Layers whose output changes under MXNet's MKLDNN fusion, on sample `data`.

    Runs the network up to each layer with and without fusion and returns the
    names of the layers where a difference first appears (all their inputs
    agree), each with its relative error (inf where the fused graph fails to
    bind, another face of the same MXNet bug).  An empty list means the fusion is
    exact on this data."""
    outputs = sym.get_internals().list_outputs()
    nodes = json.loads(sym.tojson())['nodes']
    differs, found = {}, []
    for i, node in enumerate(nodes):
        if node['op'] == 'null':
            continue
        name = node['name'] + '_output'
        if name not in outputs:
            name = node['name'] + '_output0'
        head = internal_outputs(sym, [name])
        with subgraph_backend('NONE'):
            (exact,) = run_symbol(head, arg_params, aux_params, data, data_name)
        try:
            with subgraph_backend('MKLDNN'):
                (fused,) = run_symbol(head, arg_params, aux_params, data, data_name)
            scale = max(float(np.abs(exact).max()), 1e-12)
            error = float(np.abs(exact - fused).max()) / scale
        except mx.MXNetError:  # the fused graph does not even bind
            error = float('inf')
        differs[i] = error > rtol
        inputs_agree = not any(differs.get(src, False) for src, _, _ in node['inputs'])
        if differs[i] and inputs_agree:
            found.append((node['name'], error))
    return found
