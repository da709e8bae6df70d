"""mxnet_bnq.quantize_model(_mkldnn)/quantize_net: MXNet's flow + the BNQ_QUANTIZE rewrite."""
import collections
import json
import logging
import os
import subprocess
import sys

import int8_arithmetic
import model_zoo
import mxnet as mx
import numpy as np
import pytest
import small_nets

import mxnet_bnq
import mxnet_bnq.quantization
from mxnet_bnq import names

LOG = logging.getLogger('test')


def nodes(sym):
    """The nodes of the graph the flow made, seen through its int8 regions."""
    return json.loads(mxnet_bnq.expand_regions(sym).tojson())['nodes']


def ops(sym):
    return collections.Counter(n['op'] for n in nodes(sym) if n['op'] != 'null')


def node(sym, name):
    return next(n for n in nodes(sym) if n['name'] == name)


def batch_norm_rows(rows):
    """The report's rows about BatchNorms (and the model output row after them)."""
    return [r for r in rows if r['kind'] in ('batch_norm', 'fusion_guard', 'output')]


def calib_iter(shape, n=8, seed=0):
    x = np.random.default_rng(seed).uniform(0, 1, (n,) + tuple(shape[1:])).astype('f')
    return mx.io.NDArrayIter(x, batch_size=n)


@pytest.fixture(scope='module')
def zoo(tmp_path_factory):
    directory = tmp_path_factory.mktemp('zoo')
    return lambda name: model_zoo.export(name, str(directory))


@pytest.mark.parametrize('name', sorted(model_zoo.INPUT_SHAPES))
def test_every_batchnorm_is_folded_or_quantized(zoo, name, tmp_path):
    sym, args, aux = zoo(name)
    shape = model_zoo.INPUT_SHAPES[name]
    qsym, qargs, qaux = mxnet_bnq.quantize_model_mkldnn(
        sym, args, aux, calib_mode='naive', calib_data=calib_iter(shape), label_names=None,
        quantized_dtype='auto')
    assert ops(qsym)['BatchNorm'] == 0 and ops(qsym)['_contrib_quantized_act'] == 0, ops(qsym)
    rows = batch_norm_rows(mxnet_bnq.report(sym, qsym))
    fates = ('folded', 'int8', 'fusion guard')
    assert rows and all(r['fate'].startswith(fates) for r in rows), rows
    # Every activation is folded into a convolution or fused into a BatchNorm op.
    acts = [r for r in mxnet_bnq.report(sym, qsym) if r['kind'] == 'activation']
    assert acts and all(r['fate'].startswith(('folded', 'fused')) for r in acts), acts
    x = np.random.default_rng(1).uniform(0, 1, (2,) + shape[1:]).astype('f')
    (before,) = small_nets.forward(qsym, qargs, qaux, x)
    qsym.save(str(tmp_path / 'q-symbol.json'))
    (after,) = small_nets.forward(mx.sym.load(str(tmp_path / 'q-symbol.json')), qargs, qaux, x)
    assert np.array_equal(before, after) and np.isfinite(before).all()


def test_mobilenetv2_with_standalone_batchnorms_fuses_every_relu6():
    """With MXNet's conv+BN folding off (a subprocess: MXNet reads the switch
    once), every one of MobileNetV2's 52 BatchNorms is quantized, the 35 that
    feed ReLU6 (clip(0, 6)) as one BN+clip op with uint8 output (the last with
    the global average pooling, which smart mode had left fp32), no
    quantize/dequantize is left inside the network, and the logits (random
    weights, BatchNorm statistics from real images) are at least as close to
    Gluon's fp32 as with every BatchNorm left fp32 (seen: 41.33 vs 41.28 dB)."""
    code = '''if True:
        import collections, json, sys
        sys.path.insert(0, %r)
        import mxnet as mx, numpy as np, mxnet_bnq, real_images
        from gluoncv.model_zoo import get_model
        from mxnet_bnq.layer_report import sqnr_db
        from mxnet_bnq.regions import expand_regions
        images, _ = real_images.fashion_mnist('train', 512)
        x = mx.nd.contrib.BilinearResize2D(mx.nd.array(images / 255.0), height=64, width=64)
        images = mx.nd.concat(x, x, x, dim=1).asnumpy()
        mx.random.seed(0)
        net = get_model('mobilenetv2_1.0', pretrained=False, classes=10)
        net.initialize(mx.init.Xavier())
        real_images.set_batch_norm_statistics(net, images, batch_size=32, steps=8)
        net.hybridize()
        test = images[256:272]
        truth = net(mx.nd.array(test)).asnumpy()
        sym = net(mx.sym.var('data'))
        args = {k: v.data() for k, v in net.collect_params().items()}
        aux = {k: args.pop(k) for k in sym.list_auxiliary_states()}
        result = {}
        for bn_mode in ('int8', 'fp32'):
            qsym, qargs, qaux = mxnet_bnq.quantize_model_mkldnn(
                sym, args, aux, calib_mode='naive', num_calib_examples=64, label_names=None,
                calib_data=mx.io.NDArrayIter(images[:64], batch_size=16),
                quantized_dtype='auto', bn_mode=bn_mode)
            exe = qsym.simple_bind(mx.cpu(), data=test.shape, grad_req='null')
            exe.copy_params_from(qargs, qaux, allow_extra_params=True)
            result[bn_mode] = sqnr_db(truth, exe.forward(data=mx.nd.array(test))[0].asnumpy())
            if bn_mode == 'int8':
                ours = qsym
        rows = mxnet_bnq.report(sym, ours)
        nodes = json.loads(expand_regions(ours).tojson())['nodes']
        ops = collections.Counter(n['op'] for n in nodes)
        result.update(
            bn=collections.Counter(r['fate'] for r in rows if r['kind'] == 'batch_norm'),
            act=collections.Counter(r['fate'] for r in rows if r['kind'] == 'activation'),
            quantize=ops['_contrib_quantize_v2'], dequantize=ops['_contrib_dequantize'])
        print(json.dumps(result))
    ''' % os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, MXNET_DISABLE_MKLDNN_FUSE_CONV_BN='1')
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    # The last one also takes the global average pooling after it.
    assert result['bn'] == {'int8 BN+clip(0, 6), uint8 out': 34, 'int8': 17,
                            'int8 BN+clip(0, 6)+global avg pool, uint8 out': 1}, result
    assert result['act'] == {'fused into _contrib_quantized_batch_norm_act': 34,
                             'fused into _contrib_quantized_batch_norm_act_global_avg_pool': 1}
    # The network input's quantize and the dequantize before the fp32 Flatten.
    assert (result['quantize'], result['dequantize']) == (1, 1), result
    # Without VNNI the convolutions' saturating 16-bit pairs set the fidelity
    # of both graphs (33.68 vs 33.85 dB seen on AVX2), not the BatchNorm.
    assert result['int8'] >= result['fp32'] or not int8_arithmetic.EXACT, result


def test_rewrite_op_lists_before_and_after(zoo):
    sym, args, aux = zoo('resnet18_v2')
    shape = model_zoo.INPUT_SHAPES['resnet18_v2']
    native, qargs, qaux = mxnet_bnq.quantize_model_mkldnn(
        sym, args, aux, calib_mode='naive', calib_data=calib_iter(shape), label_names=None,
        quantized_dtype='auto', bn_mode='native')
    before = ops(native)
    # MXNet leaves the input BatchNorm fp32 (smart mode) and emits BN -> act pairs.
    assert before['BatchNorm'] == 1 and before['_contrib_quantized_batch_norm'] == 9
    assert before['_contrib_quantized_act'] == 9
    after = ops(mxnet_bnq.rewrite_quantized_symbol(native, qargs, qaux))
    expected = dict(before)
    # The last BN+ReLU also takes over the global average pooling after it; the
    # input BatchNorm and the quantize after it become one op (fp32 in, int8 out).
    expected.update({'BatchNorm': 0, '_contrib_quantized_act': 0,
                     '_contrib_quantized_batch_norm_relu': 8, '_contrib_quantized_batch_norm': 0,
                     '_contrib_quantized_batch_norm_relu_global_avg_pool': 1,
                     '_contrib_quantized_pooling': before['_contrib_quantized_pooling'] - 1,
                     '_contrib_batch_norm_quantize': 1,
                     '_contrib_quantize_v2': before['_contrib_quantize_v2'] - 1})
    assert after == collections.Counter({k: v for k, v in expected.items() if v}), after
    # The same through the documented optimize_for call.
    direct = native.optimize_for('BNQ_QUANTIZE', qargs, qaux, skip_infer=True)
    assert ops(direct) == after


@pytest.mark.parametrize('calib_mode', ['none', 'naive', 'entropy'])
@pytest.mark.parametrize('quantized_dtype', ['auto', 'int8', 'uint8'])
def test_calib_modes_and_dtypes_run_and_follow_fp32(calib_mode, quantized_dtype):
    sym = small_nets.bn_after_add()
    shape = (8, 4, 8, 8)
    args, aux = small_nets.random_params(sym, shape)
    calib = np.random.default_rng(1).normal(0, 1, (32,) + shape[1:]).astype('f')
    qsym, qargs, qaux = mxnet_bnq.quantize_model_mkldnn(
        sym, args, aux, calib_mode=calib_mode, label_names=None,
        calib_data=mx.io.NDArrayIter(calib, batch_size=8), quantized_dtype=quantized_dtype)
    assert ops(qsym)['_contrib_quantized_batch_norm_relu'] == 1, ops(qsym)
    x = np.random.default_rng(2).normal(0, 1, shape).astype('f')
    (fp32,) = small_nets.forward(sym, args, aux, x)
    (int8,) = small_nets.forward(qsym, qargs, qaux, x)
    assert small_nets.sqnr_db(fp32, int8) > (15 if calib_mode == 'none' else 20)


def quantize_bn_after_pool(calib_mode, **kwargs):
    """small_nets.bn_after_pool (pooling -> BN -> ReLU) through our flow:
    (fp32 symbol, args, aux, calibration batch, quantized symbol)."""
    sym = small_nets.bn_after_pool()
    shape = (8, 4, 8, 8)
    args, aux = small_nets.random_params(sym, shape)
    calib = np.random.default_rng(1).normal(0, 1, (16,) + shape[1:]).astype('f')
    qsym, _, _ = mxnet_bnq.quantize_model_mkldnn(
        sym, args, aux, calib_mode=calib_mode, label_names=None,
        calib_data=mx.io.NDArrayIter(calib, batch_size=8), quantized_dtype='auto', **kwargs)
    return sym, args, aux, calib, qsym


def test_fused_relu_range_is_calibrated_on_post_relu_values():
    sym, args, aux, calib, qsym = quantize_bn_after_pool('naive')
    fused = node(qsym, 'quantized_bn')
    assert fused['op'] == '_contrib_quantized_batch_norm_relu'
    relu = mx.sym.Group([sym.get_internals()['relu_output']])
    (post_relu,) = small_nets.forward(relu, args, aux, calib)
    assert float(fused['attrs']['min_calib_range']) == 0.0
    assert float(fused['attrs']['max_calib_range']) == pytest.approx(post_relu.max(), rel=1e-5)


@pytest.mark.parametrize('calib_mode', ['naive', 'entropy', 'none'])
def test_fused_relu_uses_the_collected_post_relu_range(calib_mode):
    """With calibration, every fused BatchNorm+ReLU takes the post-ReLU range
    the flow collected (none is marked as missing it); without, all are."""
    qsym = quantize_bn_after_pool(calib_mode, regions=False)[-1]
    fused = node(qsym, 'quantized_bn')
    assert fused['op'] == '_contrib_quantized_batch_norm_relu'
    missing = fused['attrs'].get(names.MISSING_RELU_RANGE_ATTR)
    assert missing == ('quantized_relu' if calib_mode == 'none' else None), fused['attrs']


def test_entropy_post_relu_range_changes_the_output(monkeypatch):
    """Entropy calibration: the fused BatchNorm+ReLU takes MXNet's KL-optimal
    threshold of the post-ReLU values (computed here from a plain fp32
    forward), which is not the pre-ReLU range the op would fall back to, and
    the int8 output changes with it."""
    sym, args, aux, calib, qsym = quantize_bn_after_pool('entropy', regions=False)
    relu = mx.sym.Group([sym.get_internals()['relu_output']])
    mxq = mx.contrib.quantization
    hist = None
    for batch in (calib[:8], calib[8:]):  # as the calibration run's two batches
        (post_relu,) = small_nets.forward(relu, args, aux, batch)
        lo, hi = float(post_relu.min()), float(post_relu.max())
        th = max(abs(lo), abs(hi))
        hist = (mxq.combine_histogram(hist, post_relu, lo, hi, th) if hist else
                np.histogram(post_relu, bins=8001, range=(-th, th)) + (lo, hi, th))
    expected = mxq._get_optimal_thresholds({'relu': hist}, 'uint8')
    fused = node(qsym, 'quantized_bn')['attrs']
    got = (float(fused['min_calib_range']), float(fused['max_calib_range']))
    assert got == pytest.approx(tuple(float(np.ravel(v)[0]) for v in expected['relu']), rel=1e-5)
    # The same flow without the post-ReLU statistic: the pass falls back.
    monkeypatch.setattr(mxnet_bnq.quantization, '_relu_layers_wanted', lambda *args: {})
    monkeypatch.setattr(mxnet_bnq.quantization, '_check_relu_ranges_used', lambda qsym: None)
    fallback = quantize_bn_after_pool('entropy', regions=False)[-1]
    assert float(node(fallback, 'quantized_bn')['attrs']['max_calib_range']) != got[1]
    x = np.random.default_rng(3).normal(0, 1, calib.shape).astype('f')
    outputs = [small_nets.forward(q, args, aux, x)[0] for q in (qsym, fallback)]
    assert not np.array_equal(*outputs)


@pytest.mark.parametrize('calib_mode', ['naive', 'entropy', 'none'])
def test_fused_head_range_is_calibrated_on_the_pooled_output(calib_mode):
    """BN -> ReLU -> global average pooling becomes one op whose range is the
    pooled output's (naive: its max over the calibration data, far below the
    ReLU output's), and the logits follow fp32 more closely than with the
    ReLU's range (on fresh data: the pooled values vary little, and 256
    calibration images bound them); uncalibrated, the op derives the BN+ReLU
    range as before."""
    sym = small_nets.bn_relu_global_pool()
    shape = (8, 4, 8, 8)
    args, aux = small_nets.random_params(sym, shape)
    calib = np.random.default_rng(1).normal(0, 1, (256,) + shape[1:]).astype('f')

    def flow(**kwargs):
        return mxnet_bnq.quantize_model_mkldnn(
            sym, args, aux, calib_mode=calib_mode, label_names=None,
            calib_data=mx.io.NDArrayIter(calib, batch_size=8), quantized_dtype='auto',
            **kwargs)

    qsym, qargs, qaux = flow()
    fused = next(n for n in nodes(qsym)
                 if n['op'] == '_contrib_quantized_batch_norm_relu_global_avg_pool')
    attrs = fused['attrs']
    if calib_mode == 'none':
        assert 'max_calib_range' not in attrs
        assert attrs[names.MISSING_RELU_RANGE_ATTR] == 'quantized_pool'
        return
    assert names.MISSING_RELU_RANGE_ATTR not in attrs
    internals = sym.get_internals()
    pooled, post_relu = small_nets.forward(
        mx.sym.Group([internals['pool_output'], internals['relu_output']]), args, aux, calib)
    assert float(attrs['min_calib_range']) == 0.0
    if calib_mode == 'naive':
        assert float(attrs['max_calib_range']) == pytest.approx(pooled.max(), rel=1e-5)
    assert float(attrs['max_calib_range']) < post_relu.max() / 2
    # The same graph with the op writing the mean in the post-ReLU range.
    graph = json.loads(flow(regions=False)[0].tojson())
    head = next(n for n in graph['nodes'] if n['name'] == fused['name'])
    head['attrs']['max_calib_range'] = repr(float(post_relu.max()))
    with_relu_range = mx.sym.load_json(json.dumps(graph))
    x = np.random.default_rng(3).normal(0, 1, shape).astype('f')
    (fp32,) = small_nets.forward(sym, args, aux, x)
    (ours,) = small_nets.forward(qsym, qargs, qaux, x)
    (theirs,) = small_nets.forward(with_relu_range, qargs, qaux, x)
    # Seen: naive 44.2 vs 38.9 dB, entropy 46.0 vs 39.5 dB.
    assert small_nets.sqnr_db(fp32, ours) > small_nets.sqnr_db(fp32, theirs) + 2


@pytest.mark.parametrize('ndim', [4, 5])
@pytest.mark.parametrize('quantize_mode', ['smart', 'full'])
@pytest.mark.parametrize('calib_mode', ['naive', 'none'])
def test_a_mean_over_h_and_w_is_a_head_only_of_4d_data(ndim, quantize_mode, calib_mode):
    """BN -> ReLU -> mean(axis=(2, 3)) -> FC: of 4-D data the pooled head op;
    of 5-D data the mean is no global pooling (the op would pool the last
    axis too, and the FC would refuse the shape): the flow gives the pass
    the data shapes, and the mean stays MXNet's, the output close to fp32.
    Uncalibrated there are no data shapes: the FC's weight (one column per
    channel or not) tells the pass the same."""
    data = mx.sym.var('data')
    kernel, pad = ((3, 3), (1, 1)) if ndim == 4 else ((1, 3, 3), (0, 1, 1))
    y = mx.sym.Convolution(data, num_filter=4, kernel=kernel, pad=pad, name='conv') + data
    y = mx.sym.Activation(mx.sym.BatchNorm(y, fix_gamma=False, name='bn'), act_type='relu',
                          name='relu')
    y = mx.sym.FullyConnected(mx.sym.mean(y, axis=(2, 3), name='mean'), num_hidden=3, name='fc')
    shape = (8, 4, 6, 6) if ndim == 4 else (8, 4, 3, 6, 6)
    args, aux = small_nets.random_params(y, shape)
    calib = np.random.default_rng(1).normal(0, 1, (16,) + shape[1:]).astype('f')
    qsym, qargs, qaux = mxnet_bnq.quantize_model_mkldnn(
        y, args, aux, calib_mode=calib_mode, label_names=None, quantized_dtype='auto',
        quantize_mode=quantize_mode, regions=False,
        calib_data=mx.io.NDArrayIter(calib, batch_size=8) if calib_mode == 'naive' else None)
    ops = [n['op'] for n in nodes(qsym)]
    pooled = '_contrib_quantized_batch_norm_relu_global_avg_pool'
    assert (pooled in ops) == (ndim == 4), ops
    assert 'BatchNorm' not in ops
    x = np.random.default_rng(2).normal(0, 1, shape).astype('f')
    (fp32,) = small_nets.forward(y, args, aux, x)
    (int8,) = small_nets.forward(qsym, qargs, qaux, x)
    assert small_nets.sqnr_db(fp32, int8) > 25
    assert '__ext_shape__' not in qsym.tojson()  # the pass's input's shapes, not kept


def test_a_post_relu_range_the_flow_misses_is_an_error(monkeypatch):
    """If the flow did not collect the range of a ReLU the pass fuses, the
    fused op would silently use the pre-ReLU range: the flow refuses the result."""
    monkeypatch.setattr(mxnet_bnq.quantization, '_relu_layers_wanted', lambda *args: {})
    with pytest.raises(RuntimeError, match='quantized_bn.*output range'):
        quantize_bn_after_pool('naive')


def test_excluded_names_and_ops_stay_fp32():
    sym = small_nets.bn_after_add()
    shape = (8, 4, 8, 8)
    args, aux = small_nets.random_params(sym, shape)
    calib = mx.io.NDArrayIter(np.ones((8,) + shape[1:], 'f'), batch_size=8)
    for kwargs in (dict(excluded_sym_names=['bn']), dict(excluded_op_names=['BatchNorm']),
                   dict(bn_mode='fp32')):
        qsym, _, _ = mxnet_bnq.quantize_model_mkldnn(sym, args, aux, calib_mode='naive',
                                                     calib_data=calib, label_names=None,
                                                     **kwargs)
        assert node(qsym, 'bn')['op'] == 'BatchNorm', kwargs
        assert mxnet_bnq.report(sym, qsym, **{k: v for k, v in kwargs.items()
                                              if k != 'bn_mode'})[0]['fate'] == 'fp32'


def test_a_batchnorm_left_fp32_is_named_in_a_warning(caplog):
    """A BatchNorm on the network input before a softsign (which the plugin
    does not fuse: MXNet's convolution fusion does not either) stays fp32: the
    flow warns and says why; excluding it is only logged."""
    data = mx.sym.var('data')
    y = mx.sym.BatchNorm(data, fix_gamma=False, name='last_bn')
    y = mx.sym.Activation(y, act_type='softsign', name='softsign')
    y = mx.sym.Convolution(y, num_filter=4, kernel=(3, 3), pad=(1, 1), name='conv_a')
    shape = (8, 3, 6, 6)
    args, aux = small_nets.random_params(y, shape)
    calib = mx.io.NDArrayIter(np.random.default_rng(0).normal(0, 1, shape).astype('f'),
                              batch_size=8)
    with caplog.at_level(logging.WARNING, logger='mxnet_bnq'):
        qsym, _, _ = mxnet_bnq.quantize_model_mkldnn(y, args, aux, calib_mode='naive',
                                                     calib_data=calib, label_names=None)
    assert node(qsym, 'last_bn')['op'] == 'BatchNorm'
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert 'last_bn is left fp32' in warning and "network input 'data'" in warning, warning
    caplog.clear()
    calib.reset()
    with caplog.at_level(logging.WARNING, logger='mxnet_bnq'):
        mxnet_bnq.quantize_model_mkldnn(y, args, aux, calib_mode='naive', calib_data=calib,
                                        label_names=None, excluded_sym_names=['last_bn'])
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


def test_quantize_model_without_mkldnn_fusion():
    """The plain flow gets the same rewrite.  Its numbers are not checked against
    fp32: MXNet 1.9.1's own non-MKLDNN flow is already far off (or fails) on a
    CPU with oneDNN, with BatchNorm left fp32 as well; use quantize_model_mkldnn."""
    sym = small_nets.bn_after_pool()
    shape = (8, 4, 8, 8)
    args, aux = small_nets.random_params(sym, shape)
    calib = mx.io.NDArrayIter(np.random.default_rng(0).random((8, 4, 8, 8)).astype('f'),
                              batch_size=8)
    kwargs = dict(calib_mode='naive', label_names=None, quantized_dtype='auto', calib_data=calib)
    qsym, qargs, qaux = mxnet_bnq.quantize_model(sym, args, aux, **kwargs)
    native, _, _ = mxnet_bnq.quantize_model(sym, args, aux, bn_mode='native', **kwargs)
    expected = ops(native)
    expected.update({'_contrib_quantized_batch_norm_relu': 1, '_contrib_quantized_batch_norm': -1,
                     '_contrib_quantized_act': -1})
    assert ops(qsym) == +expected
    x = np.random.default_rng(1).random(shape)
    assert np.isfinite(small_nets.forward(qsym, qargs, qaux, x)[0]).all()


def test_quantize_net_returns_a_symbol_block_close_to_fp32(zoo):
    from gluoncv.model_zoo import get_model
    mx.random.seed(3)
    net = get_model('resnet18_v2', pretrained=False, classes=10)
    net.initialize(mx.init.Xavier())
    x = mx.nd.array(np.random.default_rng(0).uniform(0, 1, (4, 3, 64, 64)))
    fp32 = net(x).asnumpy()
    qnet = mxnet_bnq.quantize_net(net, calib_mode='naive', quantized_dtype='auto',
                                  calib_data=mx.io.NDArrayIter(x, batch_size=4))
    assert isinstance(qnet, mx.gluon.SymbolBlock)
    assert small_nets.sqnr_db(fp32, qnet(x).asnumpy()) > 15


def test_report_lists_fates_and_sqnr(zoo):
    sym, args, aux = zoo('resnet18_v2')
    shape = model_zoo.INPUT_SHAPES['resnet18_v2']
    qsym, qargs, qaux = mxnet_bnq.quantize_model_mkldnn(
        sym, args, aux, calib_mode='naive', calib_data=calib_iter(shape), label_names=None,
        quantized_dtype='auto')
    x = np.random.default_rng(0).uniform(0, 1, (8,) + shape[1:]).astype('f')
    all_rows = mxnet_bnq.report(sym, qsym, args, aux, qargs, qaux, data=x)
    rows = batch_norm_rows(all_rows)
    fates = collections.Counter((r['fate'], r['detail']) for r in rows[:-1]
                                if not r['fate'].startswith('folded'))
    assert fates == {('int8 BN+ReLU, uint8 out', 'fused_relu'): 8,
                     ('int8 BN+ReLU+global avg pool, uint8 out', 'fused_relu+global_avg_pool'): 1,
                     ('int8', 'quantized_fp32_input_bn'): 1}, fates
    assert sum(r['fate'].startswith('folded') for r in rows) == 9
    measured = [r for r in rows if r['sqnr_db'] is not None]
    assert len(measured) == 11 and all(r['sqnr_db'] > 15 for r in measured), rows
    table = mxnet_bnq.format_report(all_rows)
    assert table.count('\n') == len(all_rows) + 1 and 'resnetv20_stage1_batchnorm0_fwd' in table
    # The whole network is one int8 region; nothing is left to MXNet.
    regions = [r for r in all_rows if r['fate'] == 'region']
    assert len(regions) == 1 and regions[0]['detail'].startswith('33 ops'), regions
    assert not [r for r in all_rows if r['fate'] == 'left to MXNet']
    # Every ReLU: 9 folded into convolutions, 8 fused into BatchNorm ops (MXNet
    # quantized them, the pass fused them), the head's too (then pooled).
    acts = collections.Counter(r['fate'] for r in all_rows if r['kind'] == 'activation')
    assert acts == {'folded into _sg_mkldnn_conv': 9,
                    'fused into _contrib_quantized_batch_norm_relu': 8,
                    'fused into _contrib_quantized_batch_norm_relu_global_avg_pool': 1}, acts


class NotHybridizable(mx.gluon.HybridBlock):
    def hybrid_forward(self, F, x):
        return x.asnumpy()  # needs concrete values


@pytest.mark.parametrize('call,error,match', [
    (lambda s, a, x: mxnet_bnq.rewrite_quantized_symbol(s, a, x, backend='BNQ_NO_SUCH_PASS'),
     ValueError, "unknown backend 'BNQ_NO_SUCH_PASS'"),
    (lambda s, a, x: s.optimize_for('BNQ_QUANTIZE', a, x, skip_infer=True, fuse_relu='maybe'),
     mx.MXNetError, 'fuse_relu'),
    (lambda s, a, x: s.optimize_for('BNQ_QUANTIZE', a, x, skip_infer=True,
                                    relu_calib_ranges='bn=2:1'), mx.MXNetError, 'min <= max'),
    (lambda s, a, x: mxnet_bnq.quantize_model_mkldnn(
        s, {k: v for k, v in a.items() if k != 'bn_gamma'}, x, calib_mode='none',
        label_names=None), ValueError, 'parameters missing for bn_gamma'),
    (lambda s, a, x: mxnet_bnq.quantize_model_mkldnn(s, a, x, calib_mode='naive',
                                                     label_names=None), ValueError,
     'calib_data must be an mx.io.DataIter'),
    (lambda s, a, x: mxnet_bnq.quantize_model_mkldnn(s, a, x, calib_mode='magic'), ValueError,
     'unknown calibration mode magic'),  # MXNet's own check
    (lambda s, a, x: mxnet_bnq.quantize_model_mkldnn(s, a, x, calib_mode='none',
                                                     quantized_dtype='int4'),
     ValueError, 'quantized_dtype'),
    (lambda s, a, x: mxnet_bnq.quantize_model_mkldnn(s, a, x, calib_mode='none', bn_mode='int4'),
     ValueError, 'bn_mode'),
    (lambda s, a, x: mxnet_bnq.quantize_model_mkldnn(s, a, x, calib_mode='none',
                                                     quantize_granularity='bogus'),
     ValueError, 'quantize_granularity'),
    (lambda s, a, x: mxnet_bnq.quantize_model_mkldnn(s, a, x, calib_mode='none',
                                                     excluded_sym_names='bn'),
     ValueError, 'excluded_sym_names must be a list'),
    (lambda s, a, x: mxnet_bnq.quantize_net(NotHybridizable(), data_shapes=[('data', (1, 2))]),
     ValueError, 'cannot be hybridized'),
])
def test_bad_input_gives_clear_errors(call, error, match):
    sym = small_nets.bn_after_add()
    args, aux = small_nets.random_params(sym, (8, 4, 8, 8))
    with pytest.raises(error, match=match):
        call(sym, args, aux)


def test_symbol_without_batchnorm_is_quantized_as_mxnet_does():
    data = mx.sym.var('data')
    sym = mx.sym.Convolution(data, num_filter=4, kernel=(3, 3), name='conv')
    args = {'conv_weight': mx.nd.ones((4, 3, 3, 3)), 'conv_bias': mx.nd.zeros(4)}
    qsym, _, _ = mxnet_bnq.quantize_model_mkldnn(sym, args, {}, calib_mode='none',
                                                 label_names=None)
    native, _, _ = mx.contrib.quantization.quantize_model_mkldnn(sym, args, {},
                                                                 calib_mode='none',
                                                                 label_names=None)
    assert ops(qsym) == ops(native)


def test_batchnorm_left_fp32_between_dequantize_and_quantize_is_quantized():
    """Rewrite 1: MXNet's flow with BatchNorm excluded leaves dequantize -> BN ->
    ReLU -> quantize; the pass (told nothing about that exclusion) makes it one
    BN+ReLU op, calibrated on the post-ReLU range the quantize had."""
    sym = small_nets.bn_after_add()
    shape = (8, 4, 8, 8)
    args, aux = small_nets.random_params(sym, shape)
    calib = np.random.default_rng(1).normal(0, 1, (16,) + shape[1:]).astype('f')
    # The pass runs before partitioning: on the graph without regions.
    qsym, qargs, qaux = mxnet_bnq.quantize_model_mkldnn(
        sym, args, aux, calib_mode='naive', label_names=None, quantized_dtype='auto',
        calib_data=mx.io.NDArrayIter(calib, batch_size=8), bn_mode='fp32', regions=False)
    assert node(qsym, 'bn')['op'] == 'BatchNorm'
    rewritten = mxnet_bnq.rewrite_quantized_symbol(qsym, qargs, qaux)
    bn = node(rewritten, 'bn')
    assert bn['op'] == '_contrib_quantized_batch_norm_relu', ops(rewritten)
    assert bn['attrs']['__bnq_rewrite__'] == 'quantized_fp32_bn+fused_relu'
    assert ops(rewritten)['BatchNorm'] == 0 and ops(rewritten)['Activation'] == 0
    assert ops(rewritten)['_contrib_dequantize'] == ops(qsym)['_contrib_dequantize'] - 1
    x = np.random.default_rng(2).normal(0, 1, shape).astype('f')
    (fp32,) = small_nets.forward(sym, args, aux, x)
    (int8,) = small_nets.forward(rewritten, qargs, qaux, x)
    assert small_nets.sqnr_db(fp32, int8) > 20


@pytest.mark.parametrize('calib_mode,expected', [
    ('naive', {'_contrib_batch_norm_quantize'}),
    ('entropy', {'_contrib_batch_norm_quantize'}),
    ('none', {'_contrib_quantize_v2', '_contrib_quantized_batch_norm'}),
])
def test_batchnorm_on_the_input_is_quantized(calib_mode, expected):
    """Rewrite 2: with a calibrated range, one op from fp32 data to int8; without
    (calib_mode='none'), quantize the input at run time, then the int8 op."""
    sym = small_nets.bn_on_input()
    shape = (8, 4, 8, 8)
    args, aux = small_nets.random_params(sym, shape)
    calib = np.random.default_rng(1).normal(0, 1, (16,) + shape[1:]).astype('f')
    qsym, qargs, qaux = mxnet_bnq.quantize_model_mkldnn(
        sym, args, aux, calib_mode=calib_mode, label_names=None, quantized_dtype='auto',
        calib_data=mx.io.NDArrayIter(calib, batch_size=8))
    assert ops(qsym)['BatchNorm'] == 0, ops(qsym)
    producer = nodes(qsym)
    bn = node(qsym, 'bn')
    assert bn['op'] in expected and bn['attrs']['__bnq_rewrite__'] == 'quantized_fp32_input_bn'
    assert {producer[i[0]]['op'] for i in bn['inputs'][:1]} | {bn['op']} <= expected | {'null'}
    x = np.random.default_rng(2).normal(0, 1, shape).astype('f')
    (fp32,) = small_nets.forward(sym, args, aux, x)
    (int8,) = small_nets.forward(qsym, qargs, qaux, x)
    assert small_nets.sqnr_db(fp32, int8) > (15 if calib_mode == 'none' else 20)


def test_native_mode_keeps_mxnet_own_op_in_the_process():
    code = ('import sys; sys.path.insert(0, %r); import numpy as np, mxnet as mx, mxnet_bnq, '
            'small_nets; s = small_nets.bn_after_add(); a, x = small_nets.random_params(s, '
            '(8, 4, 8, 8)); q = mxnet_bnq.quantize_model_mkldnn(s, a, x, calib_mode="none", '
            'label_names=None, bn_mode="native")[0]; mxnet_bnq.report(s, q); '
            'print("loaded", mxnet_bnq.is_loaded())' % os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and 'loaded False' in proc.stdout, proc.stderr[-2000:]
