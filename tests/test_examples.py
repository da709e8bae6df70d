"""The example scripts and the Fashion-MNIST data path (short runs, fixed subsets)."""
import argparse
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import real_images

import mxnet_bnq

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, 'example')
MODEL = os.path.join(EXAMPLE, 'models', 'fashion_resnet20_v2')
sys.path.insert(0, EXAMPLE)
import common  # noqa: E402  pylint: disable=wrong-import-position
import imagenet_gen_qsym  # noqa: E402  pylint: disable=wrong-import-position
import imagenet_inference  # noqa: E402  pylint: disable=wrong-import-position

pack = real_images.pack_fashion_mnist
FASHION = ['--image-shape', '1,28,28', '--rgb-mean', '0', '--rgb-std', '1']
# Top-1 on the first 1000 test images: each column's expected band.
BANDS = {'fp32_model': (0.925, 0.955), 'fp32': (0.925, 0.955), 'native': (0.90, 0.955),
         'int8': (0.925, 0.955)}


@pytest.fixture(scope='module')
def recs(tmp_path_factory):
    """calib.rec (512 training images) and val.rec (the first 1000 test images)."""
    out = tmp_path_factory.mktemp('rec')
    images, labels = pack.load_fashion_mnist(split='train')
    idx = pack.calib_indices(len(images), 512, seed=0)
    pack.write_rec(str(out / 'calib'), images[idx], labels[idx])
    images, labels = pack.load_fashion_mnist(split='test')
    pack.write_rec(str(out / 'val'), images[:1000], labels[:1000])
    return out


def test_rec_packing_round_trips_exactly(recs):
    images, labels = pack.load_fashion_mnist(split='test')
    it = common.record_iter(str(recs / 'val.rec'), (1, 28, 28), 100, '0', '1')
    got_images, got_labels = [], []
    for batch in it:
        got_images.append(batch.data[0].asnumpy())
        got_labels.append(batch.label[0].asnumpy())
    assert np.array_equal(np.concatenate(got_images)[:, 0], images[:1000].astype(np.float32))
    assert np.array_equal(np.concatenate(got_labels), labels[:1000].astype(np.float32))


def test_flags_parse_including_the_fixed_bugs():
    parser = imagenet_gen_qsym.build_parser()
    assert parser.parse_args([]).shuffle_dataset is True
    assert parser.parse_args(['--no-shuffle-dataset']).shuffle_dataset is False
    assert parser.parse_args(['--shuffle-dataset=false']).shuffle_dataset is False
    assert parser.parse_args(['--shuffle-dataset', 'no']).shuffle_dataset is False
    assert parser.parse_args(['--no-pretrained']).no_pretrained is True
    assert parser.parse_args(['--exclude-first-conv=1']).exclude_first_conv is True
    assert parser.parse_args(['--image-shape', '1,28,28']).image_shape == (1, 28, 28)
    for bad in (['--shuffle-dataset=maybe'], ['--image-shape', '3,224'],
                ['--calib-mode', 'magic'], ['--bn-mode', 'int4']):
        with pytest.raises(SystemExit):
            parser.parse_args(bad)
    with pytest.raises(ValueError, match='--rgb-std must be positive'):
        common.normalization_args((3, 224, 224), '0,0,0', '0,0,0')
    with pytest.raises(argparse.ArgumentTypeError, match='1 or 3 values'):
        common.normalization_args((3, 224, 224), '0,0', '1')
    inference = imagenet_inference.build_parser()
    args = inference.parse_args(['--symbol-file', 's', '--param-file', 'p', '--benchmark'])
    assert args.benchmark is True and args.ctx == 'cpu' and args.data_layer_type == 'float32'


def run_script(script, args):
    proc = subprocess.run([sys.executable, os.path.join(EXAMPLE, script)] + args,
                          capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def quantize(recs, tmp_path, bn_mode, calib_mode='naive'):
    run_script('imagenet_gen_qsym.py', [
        '--model', MODEL, '--calib-dataset', str(recs / 'calib.rec'), '--batch-size', '64',
        '--num-calib-batches', '8', '--calib-mode', calib_mode, '--bn-mode', bn_mode,
        '--output-dir', str(tmp_path), '--quiet'] + FASHION)
    suffix = '-quantized' + ('' if calib_mode == 'none' else '-8batches-' + calib_mode)
    return str(tmp_path / ('fashion_resnet20_v2' + suffix +
                           ('' if bn_mode == 'int8' else '-bn' + bn_mode)))


def score(recs, prefix, out_json, batches=10):
    run_script('imagenet_inference.py', [
        '--symbol-file', prefix + '-symbol.json', '--param-file', prefix + '-0000.params',
        '--dataset', str(recs / 'val.rec'), '--batch-size', '100', '--num-inference-batches',
        str(batches), '--output-json', str(out_json), '--quiet'] + FASHION)
    with open(out_json) as f:
        return json.load(f)


def test_accuracy_of_each_column_stays_in_its_band(recs, tmp_path):
    top1 = {}
    for bn_mode in ('fp32_model', 'fp32', 'native', 'int8'):
        prefix = MODEL if bn_mode == 'fp32_model' else quantize(recs, tmp_path, bn_mode)
        result = score(recs, prefix, tmp_path / (bn_mode + '.json'))
        assert result['images'] == 1000
        top1[bn_mode] = result['top1']
    for bn_mode, (low, high) in BANDS.items():
        assert low <= top1[bn_mode] <= high, top1
    # Columns differ by a few images of 1000 (see the demo for fidelity measures).
    assert abs(top1['int8'] - top1['fp32']) <= 0.01, top1


def test_short_runs_report_none_mode_and_benchmark(recs, tmp_path):
    proc = run_script('imagenet_gen_qsym.py', [
        '--model', MODEL, '--calib-dataset', str(recs / 'calib.rec'), '--batch-size', '32',
        '--num-calib-batches', '2', '--calib-mode', 'entropy', '--report',
        '--output-dir', str(tmp_path), '--quiet'] + FASHION)
    assert 'int8 BN+ReLU, uint8 out' in proc.stdout and '(model output)' in proc.stdout
    prefix = quantize(recs, tmp_path, 'int8', calib_mode='none')
    assert score(recs, prefix, tmp_path / 'none.json', batches=2)['top1'] > 0.85
    proc = run_script('imagenet_inference.py', [
        '--symbol-file', prefix + '-symbol.json', '--param-file', prefix + '-0000.params',
        '--benchmark', '--batch-size', '16', '--num-inference-batches', '3', '--quiet'] + FASHION)
    assert 'images/s' in proc.stdout


def test_gluoncv_architecture_on_real_images(recs, tmp_path):
    """The ImageNet path: a gluoncv name, --no-pretrained, 3x224x224 from a .rec."""
    images, labels = pack.load_fashion_mnist(split='test')
    big = np.repeat(np.repeat(images[:16], 8, axis=1), 8, axis=2)  # 224x224
    rgb = np.repeat(big[:, :, :, None], 3, axis=3)
    pack.write_rec(str(tmp_path / 'rgb'), rgb, labels[:16])
    run_script('imagenet_gen_qsym.py', [
        '--model', 'resnet50_v2', '--no-pretrained', '--calib-dataset', str(tmp_path / 'rgb.rec'),
        '--batch-size', '8', '--num-calib-batches', '1', '--calib-mode', 'naive',
        '--image-shape', '3,224,224', '--output-dir', str(tmp_path), '--quiet'])
    prefix = str(tmp_path / 'resnet50_v2-quantized-1batches-naive')
    with open(prefix + '-symbol.json') as f:
        text = f.read()
    # One int8 region runs the whole network; inside it, every BatchNorm is quantized.
    assert [n['op'] for n in json.loads(text)['nodes'] if n['op'] != 'null'] == \
        ['_bnq_quantized_region']
    ops = [node['op'] for node in json.loads(mxnet_bnq.expand_regions(text).tojson())['nodes']]
    assert 'BatchNorm' not in ops  # none left fp32, none excluded
    # Each of the 16 blocks' pre-activation BN+ReLU, the input BN and the head.
    assert ops.count('_contrib_quantized_batch_norm_relu') == 16, ops
    assert ops.count('_contrib_batch_norm_quantize') == 1, ops
    assert ops.count('_contrib_quantized_batch_norm_relu_global_avg_pool') == 1, ops
    proc = run_script('imagenet_inference.py', [
        '--symbol-file', prefix + '-symbol.json', '--param-file', prefix + '-0000.params',
        '--dataset', str(tmp_path / 'rgb.rec'), '--batch-size', '8', '--image-shape', '3,224,224',
        '--rgb-mean', '123.68,116.779,103.939', '--rgb-std', '58.393,57.12,57.375', '--quiet'])
    assert 'on 16 images' in proc.stdout, proc.stdout


def test_data_layer_type_feeds_integer_data_or_fails_clearly(recs, tmp_path):
    """--data-layer-type uint8 (MXNet's flag) binds the data layer and reads the
    images as uint8: our quantized model (its input BatchNorm takes the pixel
    values as they are) gives the same outputs as with float32; a model whose data
    input needs float32 is refused with a clear message."""
    prefix = quantize(recs, tmp_path, 'int8')
    outputs = {}
    for dtype in ('float32', 'uint8'):
        run_script('imagenet_inference.py', [
            '--symbol-file', prefix + '-symbol.json', '--param-file', prefix + '-0000.params',
            '--dataset', str(recs / 'val.rec'), '--batch-size', '100', '--num-inference-batches',
            '2', '--data-layer-type', dtype, '--save-outputs', str(tmp_path / (dtype + '.npy')),
            '--quiet'] + FASHION)
        outputs[dtype] = np.load(str(tmp_path / (dtype + '.npy')))
    assert outputs['uint8'].shape == (200, 10)
    assert np.array_equal(outputs['uint8'], outputs['float32'])

    proc = subprocess.run([sys.executable, os.path.join(EXAMPLE, 'imagenet_inference.py'),
                           '--symbol-file', MODEL + '-symbol.json', '--param-file',
                           MODEL + '-0000.params', '--benchmark', '--data-layer-type', 'uint8',
                           '--batch-size', '4', '--num-inference-batches', '1',
                           '--quiet'] + FASHION,
                          capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert proc.returncode != 0
    assert '--data-layer-type uint8: cannot bind the model with uint8 data' in proc.stderr
    assert 'Traceback' not in proc.stderr
