"""Drop-in replacements for MXNet's quantization entry points.

They run MXNet's own flow on its public API (MKLDNN_QUANTIZE fusion,
``quantize_graph``, the calibration run, ``calib_graph``, MXNet's
post-quantization fusion), so MXNet's own argument checks apply, then the
plugin's BNQ_QUANTIZE graph pass, which quantizes every BatchNorm that could
not be folded into a convolution and fuses quantized BatchNorm + ReLU (+ global
average pooling) into one op with uint8 output, and then (``regions=True``,
the default) the BNQ_REGIONS partitioner, which hands every int8 region of the
graph to the plugin to run whole (see regions.py).  The only addition to
MXNet's flow is the statistic the pass needs, collected in the same
calibration run (calibration.py): the post-ReLU range of each BatchNorm+ReLU
pair it fuses.
"""
import logging
import numbers
import os
import tempfile

import mxnet as mx
from mxnet.contrib import quantization as mxq

from . import names
from .calibration import PostReluRecorder, run_calibration
from .fp32_preparation import prepare_fp32
from .library import load
from .names import QUANTIZED_PREFIX
from .regions import PartitionNeedsShapes, partition
from .symbol_graph import symbol_nodes

__all__ = ['quantize_model', 'quantize_model_mkldnn', 'quantize_net', 'rewrite_quantized_symbol',
           'BN_MODES', 'PASS_NAME']

PASS_NAME = names.PASS_NAME
# int8: the plugin quantizes every standalone BatchNorm (the default);
# fp32: standalone BatchNorms stay fp32 (MXNet's flow with BatchNorm excluded);
# native: MXNet's flow unchanged (MXNet's own quantized BatchNorm op; run the
#         result in a process without the plugin to get MXNet's numerics).
BN_MODES = ('int8', 'fp32', 'native')


def _check_arguments(excluded_sym_names, excluded_op_names, num_calib_examples, bn_mode,
                     regions):
    """What the flow uses before MXNet's quantize_graph checks the rest."""
    for name, value in (('excluded_sym_names', excluded_sym_names),
                        ('excluded_op_names', excluded_op_names)):
        if value is not None and not isinstance(value, list):
            raise ValueError('%s must be a list of strings, got %s' % (name, type(value).__name__))
    if num_calib_examples is not None and not isinstance(num_calib_examples, numbers.Real):
        raise ValueError('num_calib_examples must be a number or None, got %r'
                         % (num_calib_examples,))
    if not isinstance(regions, bool):
        raise ValueError('regions must be True or False, got %r' % (regions,))
    if bn_mode not in BN_MODES:
        raise ValueError('unknown bn_mode %r, expected one of %s' % (bn_mode, BN_MODES))


def _check_calib_data(calib_mode, calib_data):
    if calib_mode not in (None, 'none') and not isinstance(calib_data, mx.io.DataIter):
        raise ValueError('calib_data must be an mx.io.DataIter when calib_mode=%r, got %s'
                         % (calib_mode, type(calib_data).__name__))


def _check_params(sym, arg_params, aux_params, data_names, label_names):
    if not isinstance(arg_params, dict) or not isinstance(aux_params, dict):
        raise ValueError('arg_params and aux_params must be dicts of name -> NDArray')
    inputs = set(data_names or ()) | set(label_names or ())
    missing = [n for n in sym.list_arguments() if n not in arg_params and n not in inputs]
    missing += [n for n in sym.list_auxiliary_states() if n not in aux_params]
    if missing:
        raise ValueError('parameters missing for %s (data_names=%s, label_names=%s)'
                         % (', '.join(missing), list(data_names or ()), list(label_names or ())))


def _missing_relu_ranges(qsym):
    """{node name: the BatchNorm node} for every BatchNorm of a rewritten
    symbol that lacks the output range of that node (the pass marks them: a
    fused quantized ReLU, or the activation or BatchNorm before fp32 ops)."""
    return {n['attrs'][names.MISSING_RELU_RANGE_ATTR]: n['name'] for n in symbol_nodes(qsym)
            if names.MISSING_RELU_RANGE_ATTR in n.get('attrs', {})}


def _relu_layers_wanted(qsym, arg_params, aux_params, pass_options):
    """The fp32 layer outputs whose range the BNQ_QUANTIZE pass will want for
    uncalibrated `qsym`: {fp32 layer output: the node the pass names}.  The
    pass itself says which (a dry run marks every BatchNorm it quantizes
    without a range); a quantized node is MXNet's twin of an fp32 layer."""
    dry = rewrite_quantized_symbol(qsym, arg_params, aux_params, **pass_options)
    wanted = {}
    for name in _missing_relu_ranges(dry):
        layer = name[len(QUANTIZED_PREFIX):] if name.startswith(QUANTIZED_PREFIX) else name
        wanted[layer + '_output'] = name
    return wanted


def _format_ranges(ranges):
    return ';'.join('%s=%.9g:%.9g' % (name, lo, hi) for name, (lo, hi) in sorted(ranges.items()))


def rewrite_quantized_symbol(qsym, qarg_params, aux_params, *, relu_calib_ranges=None,
                             excluded_sym_names=None, excluded_op_names=None,
                             quantized_dtype='auto', backend=PASS_NAME, data_shapes=None):
    """Runs the plugin's BNQ_QUANTIZE pass on a quantized symbol.

    The same as ``qsym.optimize_for('BNQ_QUANTIZE', qarg_params, aux_params,
    skip_infer=True, **options)``; the ranges map node names to (min, max).
    With `data_shapes` ([(name, shape)] or DataDescs) MXNet infers the shapes
    first and the pass sees them (a mean over axes 2 and 3 is a head only of
    4-D data).  Unlike optimize_for, which only logs an unknown backend name
    and returns the symbol unchanged, an unknown `backend` is a ValueError."""
    if backend != PASS_NAME:
        raise ValueError('unknown backend %r: mxnet_bnq provides %r' % (backend, PASS_NAME))
    load()
    options = dict(quantized_dtype=quantized_dtype,
                   relu_calib_ranges=_format_ranges(relu_calib_ranges or {}),
                   excluded_sym_names=';'.join(excluded_sym_names or []),
                   excluded_op_names=';'.join(excluded_op_names or []))
    if data_shapes:
        shapes = {desc[0]: tuple(desc[1]) for desc in data_shapes}
        try:
            return qsym.optimize_for(PASS_NAME, qarg_params, aux_params, shape_dict=shapes,
                                     **options)
        except mx.MXNetError as e:
            # MXNet's type inference refuses some of its own quantized graphs
            # (channel-wise: float32 FC weights where it infers int8); the
            # pass then runs without the shapes.
            if 'Type inconsistent' not in str(e):
                raise
    return qsym.optimize_for(PASS_NAME, qarg_params, aux_params, skip_infer=True, **options)


def _quantize(sym, arg_params, aux_params, data_names, label_names, ctx, excluded_sym_names,
              excluded_op_names, calib_mode, calib_data, num_calib_examples, quantized_dtype,
              quantize_mode, quantize_granularity, logger, bn_mode, mkldnn, fusion_guard,
              regions, layer_output_collector=None, data_shapes=None):
    _check_arguments(excluded_sym_names, excluded_op_names, num_calib_examples, bn_mode, regions)
    if not isinstance(ctx, mx.Context) or ctx.device_type != 'cpu':
        raise ValueError('mxnet_bnq quantizes for a single CPU context, got %s' % (ctx,))
    if not isinstance(sym, mx.sym.Symbol):
        raise ValueError('sym must be an mx.sym.Symbol, got %s' % type(sym).__name__)
    _check_params(sym, arg_params, aux_params, data_names, label_names)
    if bn_mode == 'int8':  # 'native' must keep MXNet's own op in this process
        load()
    if not any(n['op'] == 'BatchNorm' for n in symbol_nodes(sym)) and logger:
        logger.info('the model has no BatchNorm: this is MXNet\'s quantization flow unchanged')
    excluded_sym_names = list(excluded_sym_names or [])
    excluded_op_names = list(excluded_op_names or [])
    mxnet_excluded_ops = excluded_op_names + (['BatchNorm'] if bn_mode == 'fp32' else [])
    if logger:
        logger.info('Quantizing symbol (standalone BatchNorm: %s)', bn_mode)
    sym, changes = prepare_fp32(sym, fusion_guard=fusion_guard)
    if logger:
        for change in changes:
            logger.info('fp32 preparation: %s', change)
    if mkldnn:
        sym = sym.get_backend_symbol('MKLDNN_QUANTIZE')
    qsym, qarg_params, _, collector = mxq.quantize_graph(
        sym, arg_params, aux_params, ctx=ctx, excluded_sym_names=excluded_sym_names,
        excluded_op_names=mxnet_excluded_ops, calib_mode=calib_mode,
        quantized_dtype=quantized_dtype, quantize_mode=quantize_mode,
        quantize_granularity=quantize_granularity, LayerOutputCollector=layer_output_collector,
        logger=logger)
    pass_options = dict(excluded_sym_names=excluded_sym_names,
                        excluded_op_names=excluded_op_names, quantized_dtype=quantized_dtype)

    relu_ranges = {}
    if collector is not None:  # calib_mode naive, entropy or customize
        _check_calib_data(calib_mode, calib_data)
        data_shapes = data_shapes or calib_data.provide_data
        # The dry run sees the shapes, as the pass after calibration does.
        relu_layers = (_relu_layers_wanted(qsym, qarg_params, aux_params,
                                           dict(pass_options, data_shapes=data_shapes))
                       if bn_mode == 'int8' else {})
        recorder = PostReluRecorder(collector, relu_layers, calib_mode, logger)
        run_calibration(sym, arg_params, aux_params, data_names, label_names, ctx, calib_data,
                        data_shapes, num_calib_examples, recorder, logger)
        # MXNet 1.9.1 gives layers with non-negative outputs (conv+ReLU, which emit
        # uint8) a symmetric entropy range when quantized_dtype='int8', and the
        # next convolution then refuses its input; 'auto' gives them (0, th).
        qsym, qarg_params, _ = mxq.calib_graph(
            qsym, arg_params, aux_params, collector, calib_mode=calib_mode,
            quantized_dtype='auto' if quantized_dtype == 'int8' else quantized_dtype,
            logger=logger)
        relu_ranges = recorder.relu_ranges()
    if data_shapes is None and isinstance(calib_data, mx.io.DataIter):
        data_shapes = calib_data.provide_data
    # With the shapes (the quantized weights' types too: not for the dry run).
    pass_options['data_shapes'] = data_shapes
    if mkldnn:
        qsym = qsym.get_backend_symbol('MKLDNN_QUANTIZE')
    if bn_mode == 'int8':
        qsym = rewrite_quantized_symbol(qsym, qarg_params, aux_params,
                                        relu_calib_ranges=relu_ranges, **pass_options)
        if collector is not None:
            _check_relu_ranges_used(qsym)
    _report_fp32_batch_norms(qsym, excluded_sym_names, excluded_op_names, bn_mode, logger)
    # 'native' keeps MXNet's own BatchNorm op, which loading the plugin replaces.
    if regions and bn_mode != 'native':
        qsym = _partition(qsym, qarg_params, aux_params, data_shapes, logger)
    return qsym, qarg_params, aux_params


def _check_relu_ranges_used(qsym):
    """After a calibration run, every ReLU the pass fused must have found the
    post-ReLU range the flow collected (the dry run of _relu_layers_wanted said
    which): one that fell back to the pre-ReLU range is a bug."""
    missed = sorted(_missing_relu_ranges(qsym).values())
    if missed:
        raise RuntimeError('mxnet_bnq: the BNQ_QUANTIZE pass quantized %s without the '
                           'output range the calibration collected (a bug in mxnet_bnq; '
                           'please report it)' % ', '.join(missed))


def _report_fp32_batch_norms(qsym, excluded_sym_names, excluded_op_names, bn_mode, logger):
    """Names every BatchNorm the quantized graph still runs in fp32, with its
    neighbours: a warning unless the user asked for it."""
    nodes = symbol_nodes(qsym)
    for i, node in enumerate(nodes):
        if node['op'] != 'BatchNorm':
            continue
        name = node['name']
        asked = ('excluded_sym_names' if name in excluded_sym_names else
                 'excluded_op_names' if 'BatchNorm' in excluded_op_names else
                 'bn_mode=%r' % bn_mode if bn_mode != 'int8' else None)
        if asked:
            if logger:
                logger.info('BatchNorm %s stays fp32 (%s)', name, asked)
            continue
        source = nodes[node['inputs'][0][0]]
        consumers = sorted({'%s %r' % (n['op'], n['name']) for n in nodes
                            if any(src == i for src, _, _ in n['inputs'])})
        logging.getLogger(__name__).warning(
            'BatchNorm %s is left fp32: it reads %s and feeds %s (the pass quantizes a '
            'BatchNorm next to int8 ops only)', name,
            'the network input %r' % source['name'] if source['op'] == 'null'
            else '%s %r' % (source['op'], source['name']),
            ', '.join(consumers) or 'the network output')


def _partition(qsym, qarg_params, aux_params, data_shapes, logger):
    try:
        qsym = partition(qsym, qarg_params, aux_params, data_shapes)
    except PartitionNeedsShapes as err:
        # The graph stays as MXNet's executor runs it: right, only slower.
        logging.getLogger(__name__).warning('%s; the model is returned without regions', err)
        return qsym
    if logger:
        logger.info('Partitioned the quantized graph into int8 regions run by mxnet_bnq')
    return qsym


def quantize_model(sym, arg_params, aux_params, data_names=('data',),
                   label_names=('softmax_label',), ctx=mx.cpu(), excluded_sym_names=None,
                   excluded_op_names=None, calib_mode='entropy', calib_data=None,
                   num_calib_examples=None, quantized_dtype='int8', quantize_mode='smart',
                   quantize_granularity='tensor-wise', logger=None, bn_mode='int8',
                   fusion_guard=True, regions=True):
    """``mx.contrib.quantization.quantize_model`` plus the plugin's BatchNorm rewrite.

    Same arguments, defaults and return value ``(qsym, qarg_params, aux_params)``.
    The fp32 symbol first gets :func:`mxnet_bnq.prepare_fp32` (every spelling of
    ReLU as the ``Activation`` MXNet fuses and quantizes).
    Extras: ``bn_mode``, one of :data:`BN_MODES`; ``fusion_guard`` applies
    :func:`mxnet_bnq.guard_shared_convolutions` there too (MXNet's fp32 fusion is
    wrong for a convolution shared by a BatchNorm and another consumer);
    ``regions`` partitions the result into int8 regions that the plugin runs
    (:func:`mxnet_bnq.regions.partition`; ``False`` gives the graph of MXNet's
    executor and the plugin's single ops; ignored for ``bn_mode='native'``)."""
    return _quantize(sym, arg_params, aux_params, data_names, label_names, ctx,
                     excluded_sym_names, excluded_op_names, calib_mode, calib_data,
                     num_calib_examples, quantized_dtype, quantize_mode, quantize_granularity,
                     logger, bn_mode, mkldnn=False, fusion_guard=fusion_guard, regions=regions)


def quantize_model_mkldnn(sym, arg_params, aux_params, data_names=('data',),
                          label_names=('softmax_label',), ctx=mx.cpu(), excluded_sym_names=None,
                          excluded_op_names=None, calib_mode='entropy', calib_data=None,
                          num_calib_examples=None, quantized_dtype='int8', quantize_mode='smart',
                          quantize_granularity='tensor-wise', logger=None, bn_mode='int8',
                          fusion_guard=True, regions=True):
    """``mx.contrib.quantization.quantize_model_mkldnn`` plus the plugin's BatchNorm
    rewrite; extras as :func:`quantize_model`."""
    return _quantize(sym, arg_params, aux_params, data_names, label_names, ctx,
                     excluded_sym_names, excluded_op_names, calib_mode, calib_data,
                     num_calib_examples, quantized_dtype, quantize_mode, quantize_granularity,
                     logger, bn_mode, mkldnn=True, fusion_guard=fusion_guard, regions=regions)


def _network_inputs(network, data_shapes):
    """The leading `data_shapes` that `network` takes.  A DataLoader's batch
    is (data..., label): like quantize_net_v2, drop trailing inputs while the
    network refuses them (TypeError)."""
    shapes = list(data_shapes)
    network.hybridize()
    while True:
        try:
            network(*[mx.nd.zeros(s.shape) for s in shapes])
            return shapes
        except TypeError:
            if len(shapes) <= 1:
                raise
            shapes.pop()


def _export_block(network, data_shapes):
    """(data shapes the network takes, sym, args, aux) of the exported network."""
    try:
        data_shapes = _network_inputs(network, data_shapes)
        with tempfile.TemporaryDirectory() as tmp:
            prefix = os.path.join(tmp, 'net')
            network.export(prefix, epoch=0)
            return (data_shapes,) + mx.model.load_checkpoint(prefix, 0)
    except Exception as err:
        raise ValueError('the Gluon block %s cannot be hybridized and exported, which '
                         'quantization needs: %s' % (type(network).__name__, err)) from err


def quantize_net(network, quantized_dtype='auto', quantize_mode='full',
                 quantize_granularity='tensor-wise', exclude_layers=None,
                 exclude_layers_match=None, exclude_operators=None, calib_data=None,
                 data_shapes=None, calib_mode='none', num_calib_examples=None, ctx=mx.cpu(),
                 LayerOutputCollector=None, logger=None, bn_mode='int8',  # noqa: N803 (MXNet's)
                 fusion_guard=True, regions=True):
    """``mx.contrib.quantization.quantize_net_v2`` plus the plugin's BatchNorm rewrite.

    Same arguments and defaults (``LayerOutputCollector`` with
    ``calib_mode='customize'``: its ``collect`` sees every layer output of the
    calibration run, its ``min_max_dict`` gives the ranges), extras as
    :func:`quantize_model`.  Returns a ``SymbolBlock`` running the quantized
    model."""
    if not isinstance(network, mx.gluon.HybridBlock):
        raise ValueError('network must be a Gluon HybridBlock, got %s' % type(network).__name__)
    if calib_data is not None and not isinstance(calib_data, mx.io.DataIter):
        calib_data, shapes = mxq._as_data_iter(calib_data)
        data_shapes = data_shapes or shapes
    elif calib_data is not None:
        data_shapes = data_shapes or calib_data.provide_data
    if not data_shapes:
        raise ValueError('data_shapes (or calib_data) is required to trace the network')
    data_shapes = [s if isinstance(s, mx.io.DataDesc) else mx.io.DataDesc(*s)
                   for s in data_shapes]
    data_shapes, sym, args, auxs = _export_block(network, data_shapes)
    for name, value in (('exclude_layers', exclude_layers),
                        ('exclude_operators', exclude_operators)):
        if value is not None and not isinstance(value, list):
            raise ValueError('%s must be a list of strings, got %s' % (name, type(value).__name__))
    excluded = list(exclude_layers or [])
    for pattern in exclude_layers_match or []:
        excluded += [layer.name for layer in sym.get_internals() if pattern in layer.name]
    data_names = [s.name for s in data_shapes]
    qsym, qargs, qauxs = _quantize(
        sym, args, auxs, data_names, None, ctx, excluded, exclude_operators, calib_mode,
        calib_data, num_calib_examples, quantized_dtype, quantize_mode, quantize_granularity,
        logger, bn_mode, mkldnn=True, fusion_guard=fusion_guard, regions=regions,
        layer_output_collector=LayerOutputCollector, data_shapes=data_shapes)
    net = mx.gluon.SymbolBlock(qsym, [mx.sym.var(n) for n in data_names])
    params = net.collect_params()
    for name, value in list(qargs.items()) + list(qauxs.items()):
        if name in params:
            params[name]._load_init(value, ctx, cast_dtype=True, dtype_source='saved')
    return net


logging.getLogger(__name__).addHandler(logging.NullHandler())
