#!/usr/bin/env python
"""End-to-end inference speed of quantized gluoncv resnet50_v2 (random weights;
speed does not depend on them), 224x224, synthetic data:

  fp32                     the fp32 model (MXNet's fp32 fusion, with the fusion guard)
  int8, BN fp32            MXNet's flow with every standalone BatchNorm left fp32
  int8, MXNet's BN         MXNet's flow with its own quantized BatchNorm
  int8, mxnet_bnq          mxnet_bnq's flow (int8 BN, fused BN+ReLU in uint8)

Each variant runs in its own process (MXNet's BN op only exists without the
plugin).  Median images/s over timed batches after warm-up; all variants with
OMP_NUM_THREADS threads (default: all cores).

    python python/bench_e2e.py --batch-sizes 8 64
"""
import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time

from results_io import save_results

VARIANTS = ['fp32', 'fp32_bn', 'native', 'int8']
NAMES = {'fp32': 'fp32', 'fp32_bn': 'int8, BN fp32', 'native': "int8, MXNet's BN",
         'int8': 'int8, mxnet_bnq'}
LOG = logging.getLogger('bench_e2e')


def make_models(model, image, workdir):
    """Exports the fp32 model and the three quantized variants into workdir."""
    import mxnet as mx  # pylint: disable=import-outside-toplevel
    import numpy as np  # pylint: disable=import-outside-toplevel
    import mxnet_bnq  # pylint: disable=import-outside-toplevel
    from gluoncv.model_zoo import get_model  # pylint: disable=import-outside-toplevel
    mx.random.seed(0)
    net = get_model(model, pretrained=False)
    net.initialize(mx.init.Xavier())
    net.hybridize()
    net(mx.nd.zeros((1, 3, image, image)))
    prefix = os.path.join(workdir, 'fp32')
    net.export(prefix, epoch=0)
    sym, args, aux = mx.model.load_checkpoint(prefix, 0)
    calib = mx.io.NDArrayIter(np.random.default_rng(0).uniform(
        -2, 2, (8, 3, image, image)).astype('f'), batch_size=8)
    for bn_mode in ('fp32', 'native', 'int8'):
        qsym, qargs, qaux = mxnet_bnq.quantize_model_mkldnn(
            sym, args, aux, calib_mode='naive', calib_data=calib, label_names=None,
            quantized_dtype='auto', bn_mode=bn_mode)
        out = os.path.join(workdir, 'fp32_bn' if bn_mode == 'fp32' else bn_mode)
        mx.model.save_checkpoint(out, 0, qsym, qargs, qaux)


def time_variant(prefix, batch, image, seconds):
    """images/s of one saved model (runs in a fresh process)."""
    import mxnet as mx  # pylint: disable=import-outside-toplevel
    import numpy as np  # pylint: disable=import-outside-toplevel
    import mxnet_bnq  # pylint: disable=import-outside-toplevel
    with open(prefix + '-symbol.json') as f:
        text = f.read()
    if mxnet_bnq.needs_plugin(text):
        mxnet_bnq.load()
    sym = mx.sym.load_json(text)
    if os.path.basename(prefix) == 'fp32':
        sym, _ = mxnet_bnq.guard_shared_convolutions(sym)
    saved = mx.nd.load(prefix + '-0000.params')
    # bind, not simple_bind: quantized weights keep their int8 type
    args = {k[4:]: v for k, v in saved.items() if k.startswith('arg:')}
    args['data'] = mx.nd.array(np.random.default_rng(1).uniform(-2, 2, (batch, 3, image, image)))
    aux = {k[4:]: v for k, v in saved.items() if k.startswith('aux:')}
    exe = sym.bind(mx.cpu(), args={k: v for k, v in args.items() if k in sym.list_arguments()},
                   aux_states={k: v for k, v in aux.items() if k in sym.list_auxiliary_states()},
                   grad_req='null')
    times = []
    for i in range(10000):
        start = time.perf_counter()
        exe.forward(is_train=False)
        exe.outputs[0].wait_to_read()
        if i >= 2:  # warm-up
            times.append(time.perf_counter() - start)
        if sum(times) > seconds and len(times) >= 5:
            break
    return batch / statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--model', default='resnet50_v2')
    parser.add_argument('--image', type=int, default=224)
    parser.add_argument('--batch-sizes', type=int, nargs='+', default=[8, 64])
    parser.add_argument('--seconds', type=float, default=20.0, help='timing budget per run')
    parser.add_argument('--out-dir', default='results')
    parser.add_argument('--time-one', nargs=2, metavar=('PREFIX', 'BATCH'), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.time_one:
        print(json.dumps(time_variant(args.time_one[0], int(args.time_one[1]), args.image,
                                      args.seconds)))
        return
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(message)s')
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get('OMP_NUM_THREADS',
                                                          str(os.cpu_count())))
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        LOG.info('quantizing %s three ways', args.model)
        subprocess.run([sys.executable, '-c', 'import sys; sys.path.insert(0, %r); '
                        'import bench_e2e; bench_e2e.make_models(%r, %d, %r)'
                        % (os.path.dirname(os.path.abspath(__file__)), args.model, args.image,
                           workdir)], check=True, env=env)
        for batch in args.batch_sizes:
            row = {'batch': batch}
            for variant in VARIANTS:
                out = subprocess.run(
                    [sys.executable, os.path.abspath(__file__), '--image', str(args.image),
                     '--seconds', str(args.seconds), '--time-one',
                     os.path.join(workdir, variant), str(batch)],
                    check=True, env=env, capture_output=True, text=True).stdout
                row[variant] = json.loads(out.strip().splitlines()[-1])
                LOG.info('batch %d, %s: %.1f images/s', batch, NAMES[variant], row[variant])
            rows.append(row)
    lines = ['| batch | ' + ' | '.join(NAMES[v] + ' img/s' for v in VARIANTS) + ' |',
             '|---' * (len(VARIANTS) + 1) + '|']
    for row in rows:
        lines.append('| %d | ' % row['batch'] + ' | '.join('%.1f' % row[v] for v in VARIANTS)
                     + ' |')
    print('%s, %dx%d, %s threads' % (args.model, args.image, args.image, env['OMP_NUM_THREADS']))
    save_results(args.out_dir, 'bench_e2e', '\n'.join(lines), rows)


if __name__ == '__main__':
    main()
