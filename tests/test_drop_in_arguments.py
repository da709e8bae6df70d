"""mxnet_bnq's entry points take MXNet's arguments: for every parameter of
MXNet's quantize_model, quantize_model_mkldnn and quantize_net_v2, a value
MXNet accepts ours accepts, and a value MXNet rejects ours rejects, with a
ValueError or MXNetError that names the problem (MXNet's own functions also
fail with AssertionError, TypeError, KeyError or AttributeError).  Both run in
this process on a network whose BatchNorm MXNet folds or quantizes: loading
the plugin changes no argument handling of MXNet's."""
import logging

import model_zoo
import mxnet as mx
import numpy as np
import pytest
import small_nets

import mxnet_bnq
from mxnet_bnq.layer_report import sqnr_db
from mxnet_bnq.symbol_graph import symbol_nodes

MXQ = mx.contrib.quantization
SHAPE = (8, 4, 8, 8)
ACCEPTS = 'accepts'


def outcome(call):
    try:
        call()
    except Exception as err:  # noqa: BLE001 (any rejection counts for MXNet)
        return err
    return ACCEPTS


def assert_same_outcome(theirs, ours, case):
    expected, got = outcome(theirs), outcome(ours)
    if expected is ACCEPTS:
        assert got is ACCEPTS, '%s: MXNet accepts it, ours raised %r' % (case, got)
        return
    assert got is not ACCEPTS, '%s: MXNet raised %r, ours accepted it' % (case, expected)
    assert isinstance(got, (ValueError, mx.MXNetError)) and str(got), (case, got)


class MinMaxCollector:
    """A user's collector for calib_mode='customize': min/max of every layer,
    widened by `widen` (so that its ranges are recognisably its own)."""

    def __init__(self, widen=1.0):
        self.min_max_dict = {}
        self.widen = widen

    def collect(self, name, arr):
        name = name.decode() if isinstance(name, bytes) else name
        values = mx.nd.NDArray(mx.base.ctypes.cast(arr, mx.base.NDArrayHandle), writable=False)
        lo, hi = (float(v.asscalar()) * self.widen for v in (values.min(), values.max()))
        old = self.min_max_dict.get(name, (lo, hi))
        self.min_max_dict[name] = (min(old[0], lo), max(old[1], hi))


def symbol_model():
    sym = small_nets.bn_after_pool()  # conv -> pool -> BN -> ReLU -> ...
    args, aux = small_nets.random_params(sym, SHAPE)
    return sym, args, aux


def calib_iter():
    x = np.random.default_rng(0).normal(0, 1, (16,) + SHAPE[1:]).astype('f')
    return mx.io.NDArrayIter(x, batch_size=8)


# (parameter, value) rows for quantize_model and quantize_model_mkldnn; the
# other arguments are: calib_mode='naive', calib_data=calib_iter(), label_names=None.
SYMBOL_ROWS = [
    ('sym', 'model-symbol.json'), ('sym', None),
    ('arg_params', 'without conv_weight'), ('arg_params', []),
    ('aux_params', 'without bn_moving_var'), ('aux_params', None),
    ('data_names', ('data',)), ('data_names', ('x',)),
    ('label_names', None), ('label_names', ('softmax_label',)),
    ('ctx', mx.cpu()), ('ctx', 'cpu'), ('ctx', mx.gpu(0)),
    ('excluded_sym_names', None), ('excluded_sym_names', []), ('excluded_sym_names', ['bn']),
    ('excluded_sym_names', ['no_such_layer']), ('excluded_sym_names', 'bn'),
    ('excluded_op_names', None), ('excluded_op_names', ['BatchNorm']),
    ('excluded_op_names', ['Pooling']), ('excluded_op_names', 'BatchNorm'),
    ('calib_mode', 'naive'), ('calib_mode', 'entropy'), ('calib_mode', 'none'),
    ('calib_mode', None), ('calib_mode', 'customize'), ('calib_mode', 'magic'),
    ('calib_data', None), ('calib_data', 'array'), ('calib_data', 'none, without data'),
    ('num_calib_examples', None), ('num_calib_examples', 8), ('num_calib_examples', 1),
    ('num_calib_examples', 0), ('num_calib_examples', 8.0), ('num_calib_examples', 'eight'),
    ('quantized_dtype', 'int8'), ('quantized_dtype', 'uint8'), ('quantized_dtype', 'auto'),
    ('quantized_dtype', 'int4'),
    ('quantize_mode', 'smart'), ('quantize_mode', 'full'), ('quantize_mode', 'most'),
    ('quantize_granularity', 'tensor-wise'), ('quantize_granularity', 'channel-wise'),
    ('quantize_granularity', 'bogus'),
    ('logger', None), ('logger', logging.getLogger('quantization-test')),
]


def symbol_arguments(parameter, value):
    sym, args, aux = symbol_model()
    kwargs = dict(sym=sym, arg_params=args, aux_params=aux, calib_mode='naive',
                  calib_data=calib_iter(), label_names=None)
    if value == 'without conv_weight':
        value = {k: v for k, v in args.items() if k != 'conv_weight'}
    elif value == 'without bn_moving_var':
        value = {k: v for k, v in aux.items() if k != 'bn_moving_var'}
    elif value == 'array':
        value = np.zeros((8,) + SHAPE[1:], 'f')
    elif value == 'none, without data':
        kwargs['calib_mode'], value = 'none', None
    kwargs[parameter] = value
    return kwargs


@pytest.mark.parametrize('flow', ['quantize_model', 'quantize_model_mkldnn'])
@pytest.mark.parametrize('parameter,value', SYMBOL_ROWS)
def test_symbol_flows_accept_and_reject_what_mxnet_does(flow, parameter, value):
    assert_same_outcome(lambda: getattr(MXQ, flow)(**symbol_arguments(parameter, value)),
                        lambda: getattr(mxnet_bnq, flow)(**symbol_arguments(parameter, value)),
                        '%s(%s=%r)' % (flow, parameter, value))


class PreActivationNet(mx.gluon.HybridBlock):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.conv = mx.gluon.nn.Conv2D(4, 3, padding=1)
            self.pool = mx.gluon.nn.MaxPool2D()
            self.bn = mx.gluon.nn.BatchNorm()
            self.out = mx.gluon.nn.Dense(3)

    def hybrid_forward(self, F, x):
        return self.out(F.Activation(self.bn(self.pool(self.conv(x))), act_type='relu'))


def gluon_net():
    mx.random.seed(0)
    net = PreActivationNet(prefix='net_')
    net.initialize(mx.init.Xavier())
    net(mx.nd.zeros(SHAPE))
    return net


# (parameter, value) rows for quantize_net_v2; the others: calib_mode='naive',
# calib_data=calib_iter().
NET_ROWS = [
    ('network', 'not a network'), ('network', 'a Block'),
    ('quantized_dtype', 'int8'), ('quantized_dtype', 'uint8'), ('quantized_dtype', 'int4'),
    ('quantize_mode', 'smart'), ('quantize_mode', 'full'), ('quantize_mode', 'most'),
    ('quantize_granularity', 'channel-wise'), ('quantize_granularity', 'bogus'),
    ('exclude_layers', None), ('exclude_layers', ['net_batchnorm0_fwd']),
    ('exclude_layers', 'net_batchnorm0_fwd'),
    ('exclude_layers_match', None), ('exclude_layers_match', ['batchnorm']),
    ('exclude_operators', None), ('exclude_operators', ['BatchNorm']),
    ('exclude_operators', 'BatchNorm'),
    ('calib_data', 'a DataLoader'), ('calib_data', None),
    ('data_shapes', 'none, with shapes'), ('data_shapes', 'none, without shapes'),
    ('calib_mode', 'none'), ('calib_mode', 'entropy'), ('calib_mode', 'customize'),
    ('calib_mode', 'customize, with a collector'), ('calib_mode', 'magic'),
    ('num_calib_examples', 8), ('num_calib_examples', 'eight'),
    ('ctx', mx.cpu()), ('ctx', mx.gpu(0)),
    ('LayerOutputCollector', None), ('logger', logging.getLogger('quantization-test')),
]


def net_arguments(parameter, value):
    kwargs = dict(network=gluon_net(), calib_mode='naive', calib_data=calib_iter())
    if value == 'not a network':
        value = 'net'
    elif value == 'a Block':
        value = mx.gluon.nn.Block()
    elif value == 'a DataLoader':
        x = np.random.default_rng(0).normal(0, 1, (16,) + SHAPE[1:]).astype('f')
        labels = mx.nd.zeros(len(x))  # batches of (data, label), as MXNet's wrapper expects
        value = mx.gluon.data.DataLoader(mx.gluon.data.ArrayDataset(mx.nd.array(x), labels),
                                         batch_size=8)
    elif value == 'none, with shapes':
        kwargs.update(calib_mode='none', calib_data=None)
        value = [mx.io.DataDesc('data', SHAPE)]
    elif value == 'none, without shapes':
        kwargs.update(calib_mode='none', calib_data=None)
        value = None
    elif value == 'customize, with a collector':
        kwargs['LayerOutputCollector'] = MinMaxCollector()
        value = 'customize'
    kwargs[parameter] = value
    return kwargs


@pytest.mark.parametrize('parameter,value', NET_ROWS)
def test_quantize_net_accepts_and_rejects_what_quantize_net_v2_does(parameter, value):
    assert_same_outcome(lambda: MXQ.quantize_net_v2(**net_arguments(parameter, value)),
                        lambda: mxnet_bnq.quantize_net(**net_arguments(parameter, value)),
                        'quantize_net(%s=%r)' % (parameter, value))


def calibrated_ranges(qsym):
    return {n['name']: (float(n['attrs']['min_calib_range']),
                        float(n['attrs']['max_calib_range']))
            for n in symbol_nodes(qsym) if 'min_calib_range' in n.get('attrs', {})}


def test_a_customize_collector_gives_the_ranges():
    """calib_mode='customize': the user's collector's ranges reach the graph,
    as in quantize_net_v2, the fused BatchNorm+ReLU's post-ReLU range too."""
    ranges = {}
    for widen in (1.0, 2.0):
        calib = calib_iter()
        net = mxnet_bnq.quantize_net(gluon_net(), calib_mode='customize', calib_data=calib,
                                     LayerOutputCollector=MinMaxCollector(widen), regions=False)
        ranges[widen] = calibrated_ranges(net(mx.sym.var('data')))
    fused = [n for n in symbol_nodes(net(mx.sym.var('data')))
             if n['op'] == '_contrib_quantized_batch_norm_relu']
    assert len(fused) == 1 and ranges[1.0]
    for name, (lo, hi) in ranges[1.0].items():
        assert ranges[2.0][name] == pytest.approx((2 * lo, 2 * hi), rel=1e-5), name


def test_channel_wise_quantization_runs_our_batchnorm_end_to_end(tmp_path):
    """quantize_granularity='channel-wise' on a pre-activation ResNet: every
    standalone BatchNorm is the plugin's, and the logits stay as close to fp32
    as tensor-wise quantization's, with regions or without."""
    sym, args, aux = model_zoo.export('resnet50_v2', str(tmp_path))  # MXNet's sums right
    shape = model_zoo.INPUT_SHAPES['resnet50_v2']
    x = np.random.default_rng(0).uniform(0, 1, (8,) + shape[1:]).astype('f')
    (fp32,) = small_nets.forward(sym, args, aux, x)
    sqnr = {}
    for granularity in ('tensor-wise', 'channel-wise'):
        for regions in (False, True):
            qsym, qargs, qaux = mxnet_bnq.quantize_model_mkldnn(
                sym, args, aux, calib_mode='naive', label_names=None, quantized_dtype='auto',
                calib_data=mx.io.NDArrayIter(x, batch_size=8), regions=regions,
                quantize_granularity=granularity)
            graph = mxnet_bnq.expand_regions(qsym) if regions else qsym
            ops = [n['op'] for n in symbol_nodes(graph)]
            assert 'BatchNorm' not in ops and ops.count('_contrib_quantized_batch_norm_relu') > 5
            sqnr[granularity, regions] = sqnr_db(fp32, small_nets.forward(qsym, qargs, qaux,
                                                                          x)[0])
    assert min(sqnr.values()) > 15, sqnr
    assert sqnr['channel-wise', True] >= sqnr['tensor-wise', True] - 1, sqnr
    assert sqnr['channel-wise', True] == pytest.approx(sqnr['channel-wise', False], abs=0.5)
