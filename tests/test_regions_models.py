"""Whole quantized models with int8 regions against the same models without
regions (MXNet's executor running every op), and the regions' life in an
executor: changed weights, new shapes, saved and reloaded models, bad input."""
import json
import os
import subprocess
import sys

import int8_arithmetic
import model_zoo
import mxnet as mx
import numpy as np
import pytest
import real_images

import mxnet_bnq
from mxnet_bnq.graph_runner import run_symbol
from mxnet_bnq.layer_report import sqnr_db

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FASHION = os.path.join(ROOT, 'example', 'models', 'fashion_resnet20_v2')


def region_nodes(sym):
    return [n for n in json.loads(sym.tojson())['nodes'] if n['op'] == '_bnq_quantized_region']


def quantize_both(sym, args, aux, calib, **kwargs):
    """(without regions, with regions, qargs, qaux) from one calibration."""
    qsym, qargs, qaux = mxnet_bnq.quantize_model_mkldnn(
        sym, args, aux, calib_mode='naive', label_names=None, quantized_dtype='auto',
        calib_data=mx.io.NDArrayIter(calib, batch_size=len(calib)),
        num_calib_examples=len(calib), regions=False, **kwargs)
    return qsym, mxnet_bnq.partition(qsym, qargs, qaux), qargs, qaux


def agreement(a, b):
    return float(np.mean(a.argmax(axis=1) == b.argmax(axis=1)))


def test_fashion_model_with_regions_follows_the_graph_without(tmp_path):
    sym, args, aux = mx.model.load_checkpoint(FASHION, 0)
    calib, _ = real_images.fashion_mnist('train', 500)
    qsym, psym, qargs, qaux = quantize_both(sym, args, aux, calib)
    (region,) = region_nodes(psym)  # the whole network is one region
    assert not mxnet_bnq.region_report(psym)['left_to_mxnet']
    images, labels = real_images.fashion_mnist('test')
    outs = {}
    for name, s in (('mxnet', qsym), ('regions', psym)):
        args = {k: v for k, v in qargs.items() if k in s.list_arguments()}
        args['data'] = mx.nd.zeros((500, 1, 28, 28))
        exe = s.bind(mx.cpu(), args=args, aux_states=qaux, grad_req='null')
        outs[name] = np.concatenate([exe.forward(is_train=False, data=images[i:i + 500])[0]
                                     .asnumpy() for i in range(0, len(images), 500)])
    assert agreement(outs['mxnet'], outs['regions']) >= 0.999
    assert sqnr_db(outs['mxnet'], outs['regions']) >= 45
    accuracy = float(np.mean(outs['regions'].argmax(axis=1) == labels))
    assert accuracy > 0.92, accuracy


def test_resnet50_v2_with_regions_follows_the_graph_without(tmp_path):
    sym, args, aux = model_zoo.export('resnet50_v2', str(tmp_path))
    images, _ = real_images.fashion_mnist('test', 40)
    # Real-image crops as 3-channel 64x64 inputs (BatchNorm statistics stay random).
    x = np.repeat(np.pad(images, ((0, 0), (0, 0), (18, 18), (18, 18))) / 255.0, 3, axis=1)
    x = x.astype('f')
    qsym, psym, qargs, qaux = quantize_both(sym, args, aux, x[:8])
    assert len(region_nodes(psym)) == 1
    expected = run_symbol(qsym, qargs, qaux, x)[0]
    got = run_symbol(psym, qargs, qaux, x)[0]
    assert agreement(expected, got) >= 0.999
    assert sqnr_db(expected, got) >= 45


# Where MXNet's own graph feeds a conv+sum a sum operand of the other sign
# (README, "Where MXNet is wrong"), its logits are not the truth to follow;
# test_resnet18_v1_regions_follow_the_reference_at_every_convolution checks those.
MXNET_SUMS_RIGHT = {'resnet50_v2', 'cifar_resnet20_v2', 'mobilenet1.0', 'mobilenetv2_1.0',
                    'densenet121', 'inceptionv3'}


@pytest.mark.parametrize('name', sorted(model_zoo.INPUT_SHAPES))
def test_each_gluoncv_model_becomes_one_region(name, tmp_path):
    sym, args, aux = model_zoo.export(name, str(tmp_path))
    shape = model_zoo.INPUT_SHAPES[name]
    x = np.random.default_rng(0).uniform(0, 1, (2,) + shape[1:]).astype('f')
    qsym, psym, qargs, qaux = quantize_both(sym, args, aux, x)
    report = mxnet_bnq.region_report(psym)
    assert len(report['regions']) == 1 and 'claimable' not in report, report
    # mobilenetv2 ends dequantize -> Flatten: an fp32 op after the region.
    assert all(n['op'] == 'Flatten' for n in report['left_to_mxnet']), report['left_to_mxnet']
    got = run_symbol(psym, qargs, qaux, x)[0]
    assert np.isfinite(got).all()
    if name in MXNET_SUMS_RIGHT:
        assert sqnr_db(run_symbol(qsym, qargs, qaux, x)[0], got) >= 45


def test_uncalibrated_resnet18_v2_runs_in_one_region_as_mxnet_does(tmp_path):
    """calib_mode='none': quantize and every requantize measure their input's
    range at each forward, and each convolution's int32 bias and range follow.
    All of it runs in one region with MXNet's bits, except the classifier:
    MXNet keeps an uncalibrated fully connected op's first input range."""
    sym, args, aux = model_zoo.export('resnet18_v2', str(tmp_path))
    # Full size: with many values per layer one int32 rounding difference
    # would surface (each measured range carries it into the next layer).
    shape = (2, 3, 224, 224)
    calib = np.random.default_rng(0).normal(0, 1, (2,) + shape[1:]).astype('f')
    qsym, qargs, qaux = mxnet_bnq.quantize_model_mkldnn(
        sym, args, aux, calib_mode='none', label_names=None, quantized_dtype='auto',
        calib_data=mx.io.NDArrayIter(calib, batch_size=2), regions=False)
    psym = mxnet_bnq.partition(qsym, qargs, qaux, data_shapes={'data': shape})
    report = mxnet_bnq.region_report(psym)
    (fc,) = report['left_to_mxnet']
    assert fc['op'] == '_sg_mkldnn_fully_connected' and 'first forward' in fc['reason'], fc
    biggest = max(report['regions'], key=lambda r: r['ops'])
    assert biggest['ops'] >= 50, report['regions']
    executors = []
    for s in (qsym, psym):
        bound = {k: v for k, v in qargs.items() if k in s.list_arguments()}
        bound['data'] = mx.nd.zeros(shape)
        executors.append(s.bind(mx.cpu(), args=bound, aux_states=qaux, grad_req='null'))
    rng = np.random.default_rng(5)
    for scale in (1.0, 3.0, 0.5):  # the measured ranges change from forward to forward
        x = mx.nd.array(scale * rng.normal(0, 1, shape))
        expected, got = (e.forward(is_train=False, data=x)[0].asnumpy() for e in executors)
        np.testing.assert_array_equal(got, expected)


def test_resnet18_v1_regions_follow_the_reference_at_every_convolution(tmp_path):
    """Each fused convolution of quantized resnet18_v1, run as a region, against
    the numpy reference (against MXNet's op where it is right, on CPUs without
    exact int8 arithmetic); MXNet itself is wrong from the first downsampling block
    on (an int8 sum operand into a uint8 conv+sum+relu clips at 127)."""
    import graph_probe
    sym, args, aux = model_zoo.export('resnet18_v1', str(tmp_path))
    x = np.random.default_rng(1).uniform(0, 1, (4, 3, 64, 64)).astype('f')
    qsym, psym, qargs, qaux = quantize_both(sym, args, aux, x)
    assert len(region_nodes(psym)) == 1 and not mxnet_bnq.region_report(psym)['left_to_mxnet']
    g = graph_probe.graph(qsym)
    names = qsym.get_internals().list_outputs()
    wrong_in_mxnet, memo = 0, {}
    for i, node in enumerate(g['nodes']):
        if node['op'] != '_sg_mkldnn_conv':
            continue
        reference, _, mxnet_right = graph_probe.fused_conv_reference(qsym, qargs, qaux, x, i, memo)
        out = qsym.get_internals()[names[g['node_row_ptr'][i]]]
        (got,) = run_symbol(mxnet_bnq.partition(out, qargs, qaux), qargs, qaux, x)
        if int8_arithmetic.EXACT:
            off = np.abs(got.astype(np.int64) - reference.astype(np.int64))
            assert off.max() <= 1 and (off > 0).mean() <= 1e-4, (node['name'], off.max())
        elif mxnet_right:  # the CPU's arithmetic, which MXNet's oneDNN shares
            (expected,) = run_symbol(out, qargs, qaux, x)
            np.testing.assert_array_equal(got, expected, err_msg=node['name'])
        wrong_in_mxnet += not mxnet_right
    assert wrong_in_mxnet >= 3  # the downsampling blocks and what follows them


def small_model():
    """A pre-activation block (the sum operand is int8, where MXNet is right)."""
    data = mx.sym.var('data')
    y0 = mx.sym.Convolution(data, num_filter=8, kernel=(3, 3), pad=(1, 1), name='conv0')
    y = mx.sym.Activation(mx.sym.BatchNorm(y0, name='bn0'), act_type='relu', name='relu0')
    y = mx.sym.Convolution(y, num_filter=8, kernel=(3, 3), pad=(1, 1), name='conv1') + y0
    y = mx.sym.Activation(mx.sym.BatchNorm(y, name='bn1'), act_type='relu', name='relu1')
    y = mx.sym.Pooling(y, kernel=(1, 1), global_pool=True, pool_type='avg', name='pool')
    return mx.sym.FullyConnected(mx.sym.Flatten(y), num_hidden=5, name='fc')


@pytest.fixture(scope='module')
def small():
    sym = small_model()
    import small_nets
    args, aux = small_nets.random_params(sym, (2, 3, 10, 10), seed=5)
    calib = np.random.default_rng(6).normal(0, 1, (8, 3, 10, 10)).astype('f')
    return quantize_both(sym, args, aux, calib)


def test_a_weight_changed_after_bind_is_picked_up(small):
    qsym, psym, qargs, qaux = small
    x = np.random.default_rng(7).normal(0, 1, (2, 3, 10, 10)).astype('f')
    args = {k: v.copy() for k, v in qargs.items() if k in psym.list_arguments()}
    args['data'] = mx.nd.array(x)
    exe = psym.bind(mx.cpu(), args=args, aux_states={k: v.copy() for k, v in qaux.items()},
                    grad_req='null')
    before = exe.forward(is_train=False)[0].asnumpy()
    exe.arg_dict['conv1_weight'][:] = exe.arg_dict['conv1_weight'] * -0.5
    after = exe.forward(is_train=False)[0].asnumpy()
    changed = dict(qargs, conv1_weight=qargs['conv1_weight'] * -0.5)
    np.testing.assert_array_equal(after, run_symbol(psym, changed, qaux, x)[0])
    np.testing.assert_allclose(after, run_symbol(qsym, changed, qaux, x)[0], rtol=1e-5,
                               atol=1e-5)
    assert not np.allclose(before, after)


def symbol_block(sym, qargs, qaux):
    """A Gluon SymbolBlock running `sym` with the quantized parameters."""
    net = mx.gluon.SymbolBlock(sym, [mx.sym.var('data')])
    params = net.collect_params()
    for name, value in list(qargs.items()) + list(qaux.items()):
        if name in params:
            params[name]._load_init(value, mx.cpu(), cast_dtype=True, dtype_source='saved')
    return net


def test_new_input_shapes_replan_the_region(small):
    qsym, psym, qargs, qaux = small
    net = symbol_block(psym, qargs, qaux)
    for batch, size in ((1, 10), (3, 10), (2, 13)):
        x = np.random.default_rng(batch).normal(0, 1, (batch, 3, size, size)).astype('f')
        got = net(mx.nd.array(x)).asnumpy()
        np.testing.assert_allclose(got, run_symbol(qsym, qargs, qaux, x)[0], rtol=1e-5,
                                   atol=1e-5)


def test_saved_partitioned_model_reloads_in_a_fresh_process(small, tmp_path):
    qsym, psym, qargs, qaux = small
    prefix = str(tmp_path / 'regions')
    mx.model.save_checkpoint(prefix, 0, psym, qargs, qaux)
    assert mxnet_bnq.needs_plugin(open(prefix + '-symbol.json').read())
    x = np.random.default_rng(8).normal(0, 1, (2, 3, 10, 10)).astype('f')
    np.save(str(tmp_path / 'x.npy'), x)
    code = ('import sys, numpy as np, mxnet as mx, mxnet_bnq\n'
            'from mxnet_bnq.graph_runner import run_symbol\n'
            'mxnet_bnq.load()\n'
            'sym, args, aux = mx.model.load_checkpoint(sys.argv[1], 0)\n'
            'np.save(sys.argv[3], run_symbol(sym, args, aux, np.load(sys.argv[2]))[0])\n')
    subprocess.run([sys.executable, '-c', code, prefix, str(tmp_path / 'x.npy'),
                    str(tmp_path / 'y.npy')], check=True, timeout=300)
    np.testing.assert_array_equal(np.load(str(tmp_path / 'y.npy')),
                                  run_symbol(psym, qargs, qaux, x)[0])


@pytest.mark.parametrize('data,match', [
    (mx.nd.zeros((2, 4, 8, 8), dtype='float64'),
     'data must be float32, uint8 or int8, got float64'),
    (mx.nd.zeros((2, 5, 8, 8)), 'shape'),
])
def test_a_region_fed_a_wrong_input_fails_clearly(data, match):
    import small_nets
    sym = small_nets.bn_on_input()  # the region's first op reads the network input
    args, aux = small_nets.random_params(sym, (2, 4, 8, 8))
    calib = np.random.default_rng(1).normal(0, 1, (8, 4, 8, 8)).astype('f')
    _, psym, qargs, qaux = quantize_both(sym, args, aux, calib)
    nodes = json.loads(psym.tojson())['nodes']
    (region,) = region_nodes(psym)
    assert 'data' in [nodes[i[0]]['name'] for i in region['inputs']]
    bound = {k: v for k, v in qargs.items() if k in psym.list_arguments()}
    bound['data'] = data
    with pytest.raises(mx.MXNetError, match=match):
        exe = psym.bind(mx.cpu(), args=bound, aux_states=qaux, grad_req='null')
        exe.forward(is_train=False)[0].asnumpy()
    # The process goes on: the same model runs on good input.
    good = np.random.default_rng(2).normal(0, 1, (2, 4, 8, 8)).astype('f')
    assert np.isfinite(run_symbol(psym, qargs, qaux, good)[0]).all()


def test_flow_partitions_by_default_and_regions_false_does_not(small):
    qsym, _, _, _ = small
    assert not region_nodes(qsym)
    sym = small_model()
    import small_nets
    args, aux = small_nets.random_params(sym, (2, 3, 10, 10), seed=5)
    calib = np.random.default_rng(6).normal(0, 1, (8, 3, 10, 10)).astype('f')
    psym, _, _ = mxnet_bnq.quantize_model_mkldnn(
        sym, args, aux, calib_mode='naive', label_names=None,
        calib_data=mx.io.NDArrayIter(calib, batch_size=8), num_calib_examples=8)
    assert len(region_nodes(psym)) == 1
    with pytest.raises(ValueError, match='regions'):
        mxnet_bnq.quantize_model_mkldnn(sym, args, aux, calib_mode='none', label_names=None,
                                        regions='yes')


@pytest.mark.skipif('libasan' in os.environ.get('LD_PRELOAD', ''),
                    reason="under make asan, ASan's quarantine keeps freed buffers (re-plans)")
def test_rss_stays_flat_over_3000_forwards(small):
    """No memory grows per forward (buffers are planned once) or per re-plan
    (the old plan is freed): 3000 forwards, changing the batch size every 500."""
    _, psym, qargs, qaux = small
    net = symbol_block(psym, qargs, qaux)
    batches = [mx.nd.array(np.random.default_rng(b).normal(0, 1, (b, 3, 10, 10)))
               for b in (1, 4)]
    for x in batches * 2:  # warm-up: MXNet's pools, oneDNN's kernels
        net(x).wait_to_read()
    import gc
    gc.collect()
    with open('/proc/self/statm') as f:
        before = int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20
    for i in range(3000):
        net(batches[(i // 500) % 2]).wait_to_read()
    gc.collect()
    with open('/proc/self/statm') as f:
        after = int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20
    assert after - before < 20, 'RSS grew by %.1f MB' % (after - before)


def test_a_region_compiles_once_in_a_symbol_block(small, tmp_path):
    """Gluon's CachedOp makes a new op state at each forward (unless hybridized
    with static_alloc and static_shape); the compiled region is reused, and
    compiled again only for new shapes.  MXNET_BNQ_REGION_VERBOSE logs each
    compilation and its cause."""
    _, psym, qargs, qaux = small
    prefix = str(tmp_path / 'regions')
    mx.model.save_checkpoint(prefix, 0, psym, qargs, qaux)
    code = ('import sys, numpy as np, mxnet as mx, mxnet_bnq\n'
            'mxnet_bnq.load()\n'
            'sym, args, aux = mx.model.load_checkpoint(sys.argv[1], 0)\n'
            'net = mx.gluon.SymbolBlock(sym, [mx.sym.var("data")])\n'
            'params = net.collect_params()\n'
            'for k, v in list(args.items()) + list(aux.items()):\n'
            '    params[k]._load_init(v, mx.cpu(), cast_dtype=True, dtype_source="saved")\n'
            'for b in (2, 2, 2, 2, 3, 3):\n'
            '    net(mx.nd.ones((b, 3, 10, 10))).wait_to_read()\n')
    proc = subprocess.run([sys.executable, '-c', code, prefix], capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, MXNET_BNQ_REGION_VERBOSE='1'))
    assert proc.returncode == 0, proc.stderr[-2000:]
    compiles = [line for line in proc.stderr.splitlines() if 'compiling a region' in line]
    assert len(compiles) == 2, compiles  # the first forward, and batch 3
