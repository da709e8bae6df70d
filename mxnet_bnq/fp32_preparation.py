"""Our rewrites of the fp32 symbol, before MXNet's fusion and quantization.

``prepare_fp32`` applies both:

* ``canonical_activations``: MXNet's conv fusion and quantize pass only know
  ``Activation(act_type='relu')``.  The same function spelled as the ``relu``
  operator (``F.relu``, ``mx.sym.relu``) or as ``LeakyReLU`` with slope 0
  becomes that op (same node name, same values), so conv+BN+ReLU fuses and
  the ReLU is quantized whatever the spelling.
* ``guard_shared_convolutions``: guards against a wrong fp32 fusion in MXNet
  1.9.1.  When a convolution's output feeds a BatchNorm *and* something else
  (the identity shortcut of a pre-activation block right after a bare conv
  stem, as in gluoncv's cifar_resnet*_v2), MXNet's MKLDNN fusion still folds
  the BatchNorm (and ReLU) into the convolution, and the other consumers get
  the folded tensor.  No error is raised; the model is simply wrong.  Such a
  convolution is duplicated (sharing its weights), one copy feeding the
  BatchNorm alone, which MXNet then folds correctly, the other feeding the
  remaining consumers.

``check_fusion`` lets users find layers that MXNet's fusion changes in any
model by comparing executor outputs with and without it.
"""
import json

import mxnet as mx
import numpy as np

from .graph_runner import run_symbol, subgraph_backend
from .symbol_graph import internal_outputs

__all__ = ['prepare_fp32', 'canonical_activations', 'guard_shared_convolutions', 'check_fusion',
           'UNSHARED_SUFFIX']

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


def _is_plain_relu(node):
    """The node computes max(x, 0) under another name than Activation(relu)."""
    attrs = node.get('attrs', {})
    if node['op'] == 'relu':
        return True
    if node['op'] == 'LeakyReLU':
        return attrs.get('act_type', 'leaky') == 'leaky' and float(attrs.get('slope', 0.25)) == 0
    return False


def canonical_activations(sym):
    """Returns (symbol, [description of each change]): every ``relu`` operator
    and every ``LeakyReLU(act_type='leaky', slope=0)`` becomes
    ``Activation(act_type='relu')`` with the same name and input.  Symbols
    without such a node come back unchanged."""
    graph = json.loads(sym.tojson())
    changes = []
    for node in graph['nodes']:
        if _is_plain_relu(node):
            changes.append('%s (%s) is now Activation(act_type=relu), which MXNet fuses and '
                           'quantizes' % (node['name'], node['op']))
            node['op'] = 'Activation'
            node['attrs'] = {'act_type': 'relu'}
            node['inputs'] = node['inputs'][:1]
    if not changes:
        return sym, []
    graph.pop('node_row_ptr', None)  # recomputed by MXNet on load
    return mx.sym.load_json(json.dumps(graph)), changes


def prepare_fp32(sym, fusion_guard=True):
    """Returns (symbol, [description of each change]) after
    ``canonical_activations`` and, with ``fusion_guard``,
    ``guard_shared_convolutions``."""
    sym, changes = canonical_activations(sym)
    if fusion_guard:
        sym, guarded = guard_shared_convolutions(sym)
        changes += guarded
    return sym, changes


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
