#!/usr/bin/env python
"""End-to-end inference speed of quantized gluoncv models (random weights;
speed does not depend on them), 224x224, synthetic data, per model and batch:

  fp32              the fp32 model (MXNet's fp32 fusion, after mxnet_bnq.prepare_fp32)
  MXNet int8        MXNet's own flow (mx.contrib.quantization.quantize_model_mkldnn),
                    run without the plugin
  ours, no regions  mxnet_bnq's flow with regions=False (MXNet runs every op)
  ours, regions     mxnet_bnq's flow (int8 regions run by the plugin)
  ours, VNNI        the same, with oneDNN limited to AVX512_CORE_VNNI (no AMX)

Each variant is its own process (MXNet's BatchNorm op only exists without the
plugin); the processes of one model and batch are bound together and timed in
turns (--rounds), so that the machine's drift reaches all alike; images/s is
the median over timed batches after warm-up, and each process's peak RSS is
reported too.  All runs use OMP_NUM_THREADS threads
(default: all cores).  Writes results/bench_e2e.{md,json,png}.

    python python/bench_e2e.py --models resnet50_v2 --batch-sizes 8 64
"""
import argparse
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

from results_io import save_results

VARIANTS = ['fp32', 'mxnet', 'noregions', 'regions', 'regions_vnni']
NAMES = {'fp32': 'fp32', 'mxnet': 'MXNet int8', 'noregions': 'ours, no regions',
         'regions': 'ours, regions', 'regions_vnni': 'ours, regions, VNNI only'}
# The saved model each variant runs, and extra environment.
MODEL_OF = {'fp32': 'fp32', 'mxnet': 'mxnet', 'noregions': 'noregions', 'regions': 'regions',
            'regions_vnni': 'regions'}
ENV_OF = {'regions_vnni': {'ONEDNN_MAX_CPU_ISA': 'AVX512_CORE_VNNI'}}
LOG = logging.getLogger('bench_e2e')


def make_models(model, image, workdir):
    """Exports the fp32 model and the quantized variants into workdir/<model>-*."""
    import mxnet as mx
    import numpy as np
    from gluoncv.model_zoo import get_model

    import mxnet_bnq
    mx.random.seed(0)
    net = get_model(model, pretrained=False)
    net.initialize(mx.init.Xavier())
    net.hybridize()
    net(mx.nd.zeros((1, 3, image, image)))
    prefix = os.path.join(workdir, model + '-fp32')
    net.export(prefix, epoch=0)
    sym, args, aux = mx.model.load_checkpoint(prefix, 0)
    data = np.random.default_rng(0).uniform(-2, 2, (8, 3, image, image)).astype('f')
    calib = mx.io.NDArrayIter(data, batch_size=8)
    models = {
        'mxnet': lambda: mx.contrib.quantization.quantize_model_mkldnn(
            sym, args, aux, calib_mode='naive', calib_data=calib, label_names=None,
            quantized_dtype='auto', num_calib_examples=8),
        'noregions': lambda: mxnet_bnq.quantize_model_mkldnn(
            sym, args, aux, calib_mode='naive', calib_data=calib, label_names=None,
            quantized_dtype='auto', regions=False),
        'regions': lambda: mxnet_bnq.quantize_model_mkldnn(
            sym, args, aux, calib_mode='naive', calib_data=calib, label_names=None,
            quantized_dtype='auto'),
    }
    for name, quantize in models.items():
        calib.reset()
        qsym, qargs, qaux = quantize()
        mx.model.save_checkpoint(os.path.join(workdir, '%s-%s' % (model, name)), 0, qsym, qargs,
                                 qaux)


def bind_saved(prefix, batch, image):
    """An executor of one saved model on random data (in the calling process)."""
    import mxnet as mx
    import numpy as np

    import mxnet_bnq
    with open(prefix + '-symbol.json') as f:
        text = f.read()
    if mxnet_bnq.needs_plugin(text):
        mxnet_bnq.load()
    sym = mx.sym.load_json(text)
    if prefix.endswith('-fp32'):
        sym, _ = mxnet_bnq.prepare_fp32(sym)
    saved = mx.nd.load(prefix + '-0000.params')
    # bind, not simple_bind: quantized weights keep their int8 type
    args = {k[4:]: v for k, v in saved.items() if k.startswith('arg:')}
    args['data'] = mx.nd.array(np.random.default_rng(1).uniform(-2, 2, (batch, 3, image, image)))
    aux = {k[4:]: v for k, v in saved.items() if k.startswith('aux:')}
    return sym.bind(mx.cpu(), args={k: v for k, v in args.items() if k in sym.list_arguments()},
                    aux_states={k: v for k, v in aux.items() if k in sym.list_auxiliary_states()},
                    grad_req='null')


def serve(prefix, batch, image):
    """Timing server (runs in its own process): binds the model, warms up, says
    'ready', then answers 'time SECONDS' with the list of per-batch times of the
    forwards run in that budget and 'rss' with the peak RSS in MB."""
    exe = bind_saved(prefix, batch, image)
    for _ in range(2):
        exe.forward(is_train=False)
        exe.outputs[0].wait_to_read()
    print('ready', flush=True)
    for line in sys.stdin:
        command = line.split()
        if command[0] == 'time':
            times = []
            while sum(times) < float(command[1]) or not times:
                start = time.perf_counter()
                exe.forward(is_train=False)
                exe.outputs[0].wait_to_read()
                times.append(time.perf_counter() - start)
            print(json.dumps(times), flush=True)
        elif command[0] == 'rss':
            print(json.dumps(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024), flush=True)


def time_interleaved(runs, batch, image, seconds, rounds):
    """{variant: (images/s, peak RSS in MB)} of runs = {variant: (prefix, env)}.
    Every variant runs in its own process (MXNet's BatchNorm op only exists
    without the plugin); all are bound at once and timed in turns, `rounds`
    slices of seconds / rounds each, so that drift in the machine's speed
    (seen here: 3x within minutes, from neighbours on the host) reaches every
    variant alike.  images/s is batch / the median time per batch."""
    servers = {}
    try:
        for variant, (prefix, env) in runs.items():
            servers[variant] = subprocess.Popen(
                [sys.executable, os.path.abspath(__file__), '--image', str(image), '--serve',
                 prefix, str(batch)], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL, text=True)
            if servers[variant].stdout.readline().strip() != 'ready':
                raise RuntimeError('the %s timing process failed to start' % variant)
        times = {variant: [] for variant in runs}
        order = list(runs)
        for r in range(rounds):
            for variant in order[r % len(order):] + order[:r % len(order)]:
                server = servers[variant]
                server.stdin.write('time %f\n' % (seconds / rounds))
                server.stdin.flush()
                times[variant] += json.loads(server.stdout.readline())
        result = {}
        for variant, server in servers.items():
            server.stdin.write('rss\n')
            server.stdin.flush()
            result[variant] = (batch / statistics.median(times[variant]),
                               json.loads(server.stdout.readline()))
        return result
    finally:
        for server in servers.values():
            server.stdin.close()
            server.wait()


def plot(rows, path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    labels = ['%s\nbatch %d' % (r['model'], r['batch']) for r in rows]
    fig, ax = plt.subplots(figsize=(max(8, 1.3 * len(rows)), 4.5))
    width = 0.8 / len(VARIANTS)
    for i, v in enumerate(VARIANTS):
        ratios = [r[v] / r['mxnet'] for r in rows]
        ax.bar([k + i * width for k in range(len(rows))], ratios, width, label=NAMES[v])
    ax.axhline(1.0, color='black', linewidth=0.8)
    ax.set_xticks([k + 0.4 - width / 2 for k in range(len(rows))])
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_ylabel("images/s relative to MXNet's int8 flow")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--models', nargs='+',
                        default=['resnet50_v2', 'resnet18_v2', 'resnet50_v1', 'mobilenetv2_1.0'])
    parser.add_argument('--image', type=int, default=224)
    parser.add_argument('--batch-sizes', type=int, nargs='+', default=[1, 8, 64])
    parser.add_argument('--seconds', type=float, default=5.0,
                        help='timing budget per variant, model and batch')
    parser.add_argument('--rounds', type=int, default=10,
                        help='turns in which the variants share the budget')
    parser.add_argument('--out-dir', default='results')
    parser.add_argument('--serve', nargs=2, metavar=('PREFIX', 'BATCH'), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve[0], int(args.serve[1]), args.image)
        return
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(message)s')
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get('OMP_NUM_THREADS',
                                                          str(os.cpu_count())))
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for model in args.models:
            LOG.info('quantizing %s', model)
            subprocess.run([sys.executable, '-c', 'import sys; sys.path.insert(0, %r); '
                            'import bench_e2e; bench_e2e.make_models(%r, %d, %r)'
                            % (os.path.dirname(os.path.abspath(__file__)), model, args.image,
                               workdir)], check=True, env=env, capture_output=True)
            for batch in args.batch_sizes:
                runs = {v: (os.path.join(workdir, '%s-%s' % (model, MODEL_OF[v])),
                            dict(env, **ENV_OF.get(v, {}))) for v in VARIANTS}
                row = {'model': model, 'batch': batch}
                for variant, (speed, rss) in time_interleaved(runs, batch, args.image,
                                                              args.seconds, args.rounds).items():
                    row[variant], row[variant + '_rss_mb'] = speed, rss
                    LOG.info('%s batch %d, %s: %.1f images/s, %.0f MB', model, batch,
                             NAMES[variant], speed, rss)
                rows.append(row)
    lines = ['| model | batch | ' + ' | '.join(NAMES[v] for v in VARIANTS) +
             ' | regions / MXNet | RSS regions / MXNet |', '|---' * (len(VARIANTS) + 4) + '|']
    for row in rows:
        lines.append('| %s | %d | ' % (row['model'], row['batch']) +
                     ' | '.join('%.1f' % row[v] for v in VARIANTS) +
                     ' | %.2fx | %.2fx |' % (row['regions'] / row['mxnet'],
                                             row['regions_rss_mb'] / row['mxnet_rss_mb']))
    print('images/s, %dx%d, %s threads' % (args.image, args.image, env['OMP_NUM_THREADS']))
    save_results(args.out_dir, 'bench_e2e', '\n'.join(lines), rows, chart=plot)


if __name__ == '__main__':
    main()
