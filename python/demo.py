#!/usr/bin/env python
"""The main job (`make demo`): the accuracy table of MXNet PR #16003 reproduced
on real data, with the committed Fashion-MNIST ResNet-20 v2.

Columns as in the PR: FP32; fusion + fp32 BN; fusion + int8 BN with MXNet's own
op; fusion + int8 BN with mxnet_bnq.  Each model is made and scored by the
example scripts (each in its own process, so MXNet's own op really runs
without the plugin), top-1/top-5 and images/s on the full 10k test set.
Besides top-1/top-5, each quantized model is compared with the fp32 model on
the same images: top-1 agreement and SQNR (dB) of the logits, which separate
the columns far better than top-1 on 10k images (a few images either way).
Writes results/demo.md, results/demo.json and results/demo.png.
"""
import argparse
import json
import logging
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import numpy as np  # noqa: E402  pylint: disable=wrong-import-position
import pack_fashion_mnist  # noqa: E402  pylint: disable=wrong-import-position
from results_io import save_results  # noqa: E402  pylint: disable=wrong-import-position

MODEL = os.path.join(ROOT, 'example', 'models', 'fashion_resnet20_v2')
COLUMNS = [('FP32', None), ('fusion + fp32 BN', 'fp32'),
           ('fusion + int8 BN (MXNet op)', 'native'), ('fusion + int8 BN (mxnet_bnq)', 'int8')]
LOG = logging.getLogger('demo')


def run(script, args):
    cmd = [sys.executable, os.path.join(ROOT, 'example', script)] + args
    LOG.info('$ %s', ' '.join(cmd[1:]))
    # MXNet's default is half the logical cores (1 thread on 2 cores): use them all.
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get('OMP_NUM_THREADS',
                                                          str(os.cpu_count())))
    subprocess.run(cmd, check=True, cwd=ROOT, env=env)


def quantize(bn_mode, opts):
    run('imagenet_gen_qsym.py', [
        '--model', MODEL, '--calib-dataset', os.path.join(opts.data_dir, 'calib.rec'),
        '--image-shape', '1,28,28', '--rgb-mean', '0', '--rgb-std', '1',
        '--batch-size', str(opts.batch_size), '--num-calib-batches', str(opts.calib_batches),
        '--calib-mode', opts.calib_mode, '--quantized-dtype', 'auto', '--bn-mode', bn_mode,
        '--no-shuffle-dataset', '--output-dir', opts.model_dir, '--quiet'])
    suffix = '-quantized-%dbatches-%s' % (opts.calib_batches, opts.calib_mode)
    suffix += '' if bn_mode == 'int8' else '-bn' + bn_mode
    return os.path.join(opts.model_dir, os.path.basename(MODEL) + suffix)


def score(prefix, opts, out_json, out_npy):
    run('imagenet_inference.py', [
        '--symbol-file', prefix + '-symbol.json', '--param-file', prefix + '-0000.params',
        '--dataset', os.path.join(opts.data_dir, 'val.rec'), '--image-shape', '1,28,28',
        '--rgb-mean', '0', '--rgb-std', '1', '--batch-size', str(opts.batch_size),
        '--num-inference-batches', str(opts.num_batches), '--output-json', out_json,
        '--save-outputs', out_npy, '--quiet'])
    with open(out_json) as f:
        result = json.load(f)
    # Speed on synthetic data, as MXNet's script benchmarks (scoring the .rec
    # also decodes images on the same two cores); the median of three runs in
    # fresh processes, as single runs of this small model vary by up to 40%.
    bench_json = out_json.replace('.json', '_benchmark.json')
    speeds = []
    for _ in range(3):
        run('imagenet_inference.py', [
            '--symbol-file', prefix + '-symbol.json', '--param-file', prefix + '-0000.params',
            '--image-shape', '1,28,28', '--batch-size', str(opts.batch_size), '--benchmark',
            '--num-inference-batches', '200', '--output-json', bench_json, '--quiet'])
        with open(bench_json) as f:
            speeds.append(json.load(f)['images_per_second'])
    result['scoring_images_per_second'] = result['images_per_second']
    result['benchmark_runs'] = speeds
    result['images_per_second'] = sorted(speeds)[1]
    return result


def fidelity(reference, outputs):
    """Top-1 agreement and SQNR (dB) of `outputs` against the fp32 `reference`."""
    from mxnet_bnq.layer_report import sqnr_db
    return float(np.mean(reference.argmax(1) == outputs.argmax(1))), sqnr_db(reference, outputs)


def markdown(rows):
    lines = ['| model | top-1 | top-5 | images/s | top-1 agreement with FP32 | SQNR vs FP32 (dB) |',
             '|---|---|---|---|---|---|']
    for r in rows:
        lines.append('| %s | %.4f | %.4f | %.0f | %.4f | %s |' % (
            r['column'], r['top1'], r['top5'], r['images_per_second'], r['agreement'],
            'exact' if r['sqnr_db'] == float('inf') else '%.1f' % r['sqnr_db']))
    return '\n'.join(lines)


def chart(rows, path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    names = [r['column'].replace(' (', '\n(') for r in rows]
    ax1.bar(names, [100 * r['top1'] for r in rows], color='tab:blue')
    low = min(100 * r['top1'] for r in rows)
    ax1.set_ylim(max(0, low - 2), 100)
    ax1.set_ylabel('top-1 %')
    for i, r in enumerate(rows):
        ax1.text(i, 100 * r['top1'], '%.2f' % (100 * r['top1']), ha='center', va='bottom')
    ax2.bar(names, [r['images_per_second'] for r in rows], color='tab:orange')
    ax2.set_ylabel('images/s (batch %d, synthetic data)' % rows[0]['batch_size'])
    for ax in (ax1, ax2):
        ax.tick_params(axis='x', labelsize=7)
    fig.suptitle('Fashion-MNIST ResNet-20 v2, 10k test images, %s CPU threads'
                 % os.environ.get('OMP_NUM_THREADS', os.cpu_count()))
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--data-dir', default=os.path.join(ROOT, 'data', 'fashion_mnist'))
    parser.add_argument('--model-dir', default=os.path.join(ROOT, 'model'))
    parser.add_argument('--out-dir', default=os.path.join(ROOT, 'results'))
    parser.add_argument('--calib-mode', default='naive', choices=['none', 'naive', 'entropy'])
    parser.add_argument('--calib-batches', type=int, default=10)
    parser.add_argument('--batch-size', type=int, default=100)
    parser.add_argument('--num-batches', type=int, default=0, help='0: the whole test set')
    opts = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(message)s')
    if not os.path.isfile(os.path.join(opts.data_dir, 'val.rec')):
        LOG.info('packing Fashion-MNIST into %s', opts.data_dir)
        if pack_fashion_mnist.main(['--out-dir', opts.data_dir]):
            raise SystemExit('cannot pack Fashion-MNIST (apt-get install dataset-fashion-mnist)')
    os.makedirs(opts.out_dir, exist_ok=True)
    rows, reference = [], None
    for column, bn_mode in COLUMNS:
        prefix = MODEL if bn_mode is None else quantize(bn_mode, opts)
        name = os.path.join(opts.out_dir, 'demo_%s' % (bn_mode or 'fp32_model'))
        result = score(prefix, opts, name + '.json', name + '.npy')
        outputs = np.load(name + '.npy')
        reference = outputs if reference is None else reference
        result['agreement'], result['sqnr_db'] = fidelity(reference, outputs)
        result['column'] = column
        rows.append(result)
        LOG.info('%s: top-1 %.4f, top-5 %.4f, %.0f images/s, agreement %.4f, SQNR %.1f dB',
                 column, result['top1'], result['top5'], result['images_per_second'],
                 result['agreement'], result['sqnr_db'])
    save_results(opts.out_dir, 'demo', markdown(rows), rows, chart)


if __name__ == '__main__':
    main()
