"""Running a symbol on one batch (binds serialized), and binding with a chosen
MXNet subgraph backend."""
import os
import threading
from contextlib import contextmanager

import mxnet as mx

__all__ = ['run_symbol', 'subgraph_backend']

# MXNet 1.9.1's bind is not thread-safe: partitioning for the subgraph backend
# sets and removes attributes on the backend's shared property objects, and
# four threads binding at once crash stock MXNet (no plugin loaded) within a
# few hundred binds.  Running the bound executors concurrently is fine.
_BIND_LOCK = threading.Lock()


@contextmanager
def subgraph_backend(name):
    """Binds inside this context use MXNet subgraph backend `name` ('NONE': no fusion)."""
    old = os.environ.get('MXNET_SUBGRAPH_BACKEND')
    os.environ['MXNET_SUBGRAPH_BACKEND'] = name
    try:
        yield
    finally:
        if old is None:
            del os.environ['MXNET_SUBGRAPH_BACKEND']
        else:
            os.environ['MXNET_SUBGRAPH_BACKEND'] = old


def run_symbol(sym, arg_params, aux_params, data, data_name='data'):
    """Outputs of `sym` (numpy) for one batch `data`; unused params are ignored."""
    arg_names, aux_names = set(sym.list_arguments()), set(sym.list_auxiliary_states())
    bound = {k: v for k, v in arg_params.items() if k in arg_names}
    bound[data_name] = mx.nd.array(data)
    with _BIND_LOCK:
        exe = sym.bind(mx.cpu(), args=bound, grad_req='null',
                       aux_states={k: v for k, v in aux_params.items() if k in aux_names})
    return [o.asnumpy() for o in exe.forward(is_train=False)]
