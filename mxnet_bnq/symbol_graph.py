"""Reading a quantized or fp32 symbol's graph: its JSON nodes, and some of its
internal outputs as a symbol of their own."""
import json

import mxnet as mx

__all__ = ['symbol_nodes', 'internal_outputs']


def symbol_nodes(sym):
    """The node list of a symbol's JSON."""
    return json.loads(sym.tojson())['nodes']


def internal_outputs(sym, names):
    """A group of the internal outputs of `sym` called `names`."""
    internals = sym.get_internals()
    all_names = internals.list_outputs()
    return mx.sym.Group([internals[all_names.index(n)] for n in names])
