#!/usr/bin/env python
"""Benchmark of the plugin's quantized BatchNorm against MXNet's own op, fp32
BatchNorm and a plain multi-threaded copy of the same bytes.

Each op is timed twice:
  alone     called imperatively on plain NCHW data, outputs preallocated;
  in graph  bound after `quantize_v2` (whose oneDNN layout is what MXNet's
            quantized convolutions hand a BatchNorm); reported as the time of
            quantize_v2 -> op minus the time of quantize_v2 alone, so it
            includes the layout reorder MXNet runs before any library op.
MXNet's own op runs in a subprocess that never loads the plugin.

A second table times the head of a pre-activation ResNet (BN -> ReLU ->
global average pooling) in graph after quantize_v2, int8: the plugin's fused
op, the plugin's BN+ReLU followed by MXNet's int8 pooling, MXNet's BN -> act ->
pooling, and the fp32 graph.

    python python/bench_op.py                 # all shapes, table + PNG in results/
    python python/bench_op.py --quick         # one shape
    python python/bench_op.py --threads 1     # single-threaded

All ops, MXNet's included, run with OMP_NUM_THREADS threads (default: all
cores; MXNet's own default is half the logical cores, 1 on a 2-core machine),
and the copy uses as many threads.
"""
import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import threading
import time

import numpy as np
from results_io import save_results

SHAPES = [(64, 256, 56, 56), (32, 64, 112, 112), (128, 512, 28, 28), (1, 2048, 7, 7)]
QUICK_SHAPES = [(32, 64, 112, 112)]
HEAD_SHAPES = [(8, 2048, 7, 7), (64, 2048, 7, 7)]
DTYPES = ['int8', 'uint8']
LOG = logging.getLogger('bench_op')


def num_threads():
    return int(os.environ.get('OMP_NUM_THREADS', os.cpu_count()))


def median_ms(fn, budget_s, min_reps=5, max_reps=50):
    """Median wall time of fn() in ms, after one warm-up call."""
    fn()
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    reps = int(max(min_reps, min(max_reps, budget_s / max(first, 1e-6))))
    times = [first]
    for _ in range(reps - 1):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def copy_ms(nbytes, budget_s):
    """A copy of nbytes by as many threads as the ops use (numpy releases the GIL)."""
    src = np.ones(nbytes, np.uint8)
    dst = np.empty_like(src)
    chunks = np.array_split(np.arange(nbytes), num_threads())
    bounds = [(c[0], c[-1] + 1) for c in chunks if len(c)]

    def run():
        threads = [threading.Thread(target=np.copyto, args=(dst[a:b], src[a:b])) for a, b in bounds]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return median_ms(run, budget_s)


def bn_params(mx, channels, rng):
    return [mx.nd.array(rng.uniform(0.5, 1.5, channels)), mx.nd.array(rng.normal(0, 1, channels)),
            mx.nd.array(rng.normal(0, 1, channels)), mx.nd.array(rng.uniform(0.5, 2, channels))]


def quantized_input(mx, shape, dtype, rng):
    lo = -128 if dtype == 'int8' else 0
    q = mx.nd.array(rng.integers(lo, 128, size=shape, dtype=np.int8 if lo else np.uint8),
                    dtype=dtype)
    return q, mx.nd.array([0.0 if dtype == 'uint8' else -4.0]), mx.nd.array([4.0])


def op_alone_ms(mx, shape, dtype, budget_s, relu=False):
    rng = np.random.default_rng(0)
    q, lo, hi = quantized_input(mx, shape, dtype, rng)
    params = bn_params(mx, shape[1], rng)
    op = mx.nd.contrib.quantized_batch_norm_relu if relu else mx.nd.contrib.quantized_batch_norm
    out = [mx.nd.empty(shape, dtype='uint8' if relu else 'int8'), mx.nd.empty(1), mx.nd.empty(1)]

    def run():
        op(q, *params, lo, hi, fix_gamma=False, min_calib_range=-5.0, max_calib_range=5.0, out=out)
        out[0].wait_to_read()
    return median_ms(run, budget_s)


def fp32_alone_ms(mx, shape, budget_s):
    rng = np.random.default_rng(0)
    x = mx.nd.array(rng.normal(0, 1, shape).astype(np.float32))
    params = bn_params(mx, shape[1], rng)
    out = mx.nd.empty(shape)

    def run():
        mx.nd.BatchNorm(x, *params, fix_gamma=False, use_global_stats=True, out=out)
        out.wait_to_read()
    return median_ms(run, budget_s)


def graph_ms(mx, sym, shape, budget_s):
    rng = np.random.default_rng(0)
    exe = sym.simple_bind(mx.cpu(), data=shape, grad_req='null')
    exe.arg_dict['data'][:] = rng.uniform(0, 3, shape).astype(np.float32)
    for name, arr in list(exe.arg_dict.items()) + list(exe.aux_dict.items()):
        if name != 'data':
            arr[:] = rng.uniform(0.5, 1.5, arr.shape)

    def run():
        exe.forward(is_train=False)
        for o in exe.outputs:
            o.wait_to_read()
    return median_ms(run, budget_s)


def quantize_sym(mx, dtype):
    data = mx.sym.var('data')
    lo = 0.0 if dtype == 'uint8' else -3.0
    return mx.sym.contrib.quantize_v2(data, out_type=dtype, min_calib_range=lo,
                                      max_calib_range=3.0, name='quantize')


def bn_in_graph_sym(mx, dtype, variant):
    q = quantize_sym(mx, dtype)
    names = ['gamma', 'beta', 'moving_mean', 'moving_var']
    params = [mx.sym.var('bn_' + n) for n in names]
    attrs = dict(fix_gamma=False, min_calib_range=-5.0, max_calib_range=5.0)
    pool = dict(kernel=(1, 1), global_pool=True, pool_type='avg', name='pool')
    if variant == 'bn_relu_pool_fused':
        return mx.sym.contrib.quantized_batch_norm_relu_global_avg_pool(
            q[0], *params, q[1], q[2], name='bn', **attrs)
    if variant in ('bn_relu_fused', 'bn_relu_then_pool'):
        out = mx.sym.contrib.quantized_batch_norm_relu(q[0], *params, q[1], q[2], name='bn',
                                                       **attrs)
    else:
        out = mx.sym.contrib.quantized_batch_norm(q[0], *params, q[1], q[2], name='bn', **attrs)
    if variant in ('bn_then_act', 'bn_act_pool'):
        out = mx.sym.contrib.quantized_act(out[0], out[1], out[2], act_type='relu', name='act')
    if variant in ('bn_relu_then_pool', 'bn_act_pool'):
        out = mx.sym.contrib.quantized_pooling(out[0], out[1], out[2], **pool)
    return out


def in_graph_ms(mx, shape, dtype, budget_s, variant='bn'):
    base = graph_ms(mx, quantize_sym(mx, dtype), shape, budget_s)
    return graph_ms(mx, bn_in_graph_sym(mx, dtype, variant), shape, budget_s) - base


def fp32_in_graph_ms(mx, shape, budget_s, head=False):
    data = mx.sym.var('data')
    sym = mx.sym.BatchNorm(data, fix_gamma=False, use_global_stats=True, name='bn')
    if head:
        sym = mx.sym.Pooling(mx.sym.Activation(sym, act_type='relu'), kernel=(1, 1),
                             global_pool=True, pool_type='avg')
    return graph_ms(mx, sym, shape, budget_s)


def measure_head(shapes, budget_s, native):
    """The BN -> ReLU -> global average pooling head, in graph, int8 input."""
    import mxnet as mx
    if not native:
        import mxnet_bnq
        mxnet_bnq.load()
    rows = []
    for shape in shapes:
        if native:
            row = dict(mxnet_head=in_graph_ms(mx, shape, 'int8', budget_s, 'bn_act_pool'))
        else:
            row = dict(shape=list(shape),
                       ours_fused=in_graph_ms(mx, shape, 'int8', budget_s, 'bn_relu_pool_fused'),
                       ours_then_pool=in_graph_ms(mx, shape, 'int8', budget_s,
                                                  'bn_relu_then_pool'),
                       fp32_head=fp32_in_graph_ms(mx, shape, budget_s, head=True))
        LOG.info('head %s native=%s: %s', shape, native, row)
        rows.append(row)
    return rows


def head_table(rows):
    lines = ['| shape | ours BN+ReLU+pool fused ms | ours BN+ReLU, then MXNet pooling ms '
             '| MXNet BN -> act -> pooling ms | fp32 BN -> ReLU -> pooling ms |',
             '|---|---|---|---|---|']
    for r in rows:
        lines.append('| %s | %.2f | %.2f | %.2f | %.2f |' % (
            'x'.join(map(str, r['shape'])), r['ours_fused'], r['ours_then_pool'],
            r['mxnet_head'], r['fp32_head']))
    return '\n'.join(lines)


def measure_native(shapes, dtypes, budget_s):
    """MXNet's own op; run in a process without the plugin."""
    import mxnet as mx
    rows = []
    for shape in shapes:
        for dtype in dtypes:
            rows.append(dict(shape=list(shape), dtype=dtype,
                             mxnet_alone=op_alone_ms(mx, shape, dtype, budget_s),
                             mxnet_graph=in_graph_ms(mx, shape, dtype, budget_s),
                             mxnet_bn_act_graph=in_graph_ms(mx, shape, dtype, budget_s,
                                                            'bn_then_act')))
            LOG.info('native %s %s: %s', shape, dtype, rows[-1])
    return rows


def measure_plugin(shapes, dtypes, budget_s):
    import mxnet as mx

    import mxnet_bnq
    mxnet_bnq.load()
    rows = []
    for shape in shapes:
        fp32_alone = fp32_alone_ms(mx, shape, budget_s)
        fp32_graph = fp32_in_graph_ms(mx, shape, budget_s)
        copy = copy_ms(int(np.prod(shape)), budget_s)
        for dtype in dtypes:
            rows.append(dict(shape=list(shape), dtype=dtype, copy=copy,
                             ours_alone=op_alone_ms(mx, shape, dtype, budget_s),
                             ours_relu_alone=op_alone_ms(mx, shape, dtype, budget_s, relu=True),
                             ours_graph=in_graph_ms(mx, shape, dtype, budget_s),
                             ours_relu_graph=in_graph_ms(mx, shape, dtype, budget_s,
                                                         'bn_relu_fused'),
                             fp32_alone=fp32_alone, fp32_graph=fp32_graph))
            LOG.info('plugin %s %s: %s', shape, dtype, rows[-1])
    return rows


def run_native_subprocess(shapes, budget_s, head=False):
    cmd = [sys.executable, os.path.abspath(__file__), '--native-json', '--budget', str(budget_s),
           '--shapes'] + ['x'.join(map(str, s)) for s in shapes] + (['--head'] if head else [])
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def gbps(nbytes, ms):
    return nbytes / ms / 1e6


def table(rows):
    head = ('| shape | in | copy ms | ours ms (GB/s, x copy) | MXNet ms | fp32 BN ms '
            '| ours in graph ms | MXNet in graph ms | fp32 BN in graph ms '
            '| ours BN+ReLU in graph ms | MXNet BN + act in graph ms |')
    lines = [head, '|' + '---|' * (head.count('|') - 1)]
    for r in rows:
        n = int(np.prod(r['shape']))
        lines.append('| %s | %s | %.2f | %.2f (%.1f, %.2fx) | %.2f | %.2f | %.2f | %.2f | %.2f '
                     '| %.2f | %.2f |' % (
                         'x'.join(map(str, r['shape'])), r['dtype'], r['copy'], r['ours_alone'],
                         gbps(2 * n, r['ours_alone']), r['ours_alone'] / r['copy'],
                         r['mxnet_alone'], r['fp32_alone'], r['ours_graph'], r['mxnet_graph'],
                         r['fp32_graph'], r['ours_relu_graph'], r['mxnet_bn_act_graph']))
    return '\n'.join(lines)


def chart(rows, path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    series = [('copy', 'copy of the bytes'), ('ours_alone', 'ours, alone'),
              ('mxnet_alone', 'MXNet, alone'), ('fp32_alone', 'fp32 BN, alone'),
              ('ours_graph', 'ours, in graph'), ('mxnet_graph', 'MXNet, in graph'),
              ('ours_relu_graph', 'ours BN+ReLU, in graph'),
              ('mxnet_bn_act_graph', 'MXNet BN + act, in graph')]
    labels = ['%s\n%s' % ('x'.join(map(str, r['shape'])), r['dtype']) for r in rows]
    fig, ax = plt.subplots(figsize=(max(8, 1.6 * len(rows)), 5))
    width = 0.8 / len(series)
    for i, (key, name) in enumerate(series):
        ax.bar(np.arange(len(rows)) + i * width, [max(r[key], 1e-3) for r in rows], width,
               label=name)
    ax.set_xticks(np.arange(len(rows)) + 0.4 - width / 2)
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_yscale('log')
    ax.set_ylabel('median ms (log scale)')
    ax.set_title('Quantized BatchNorm, %d threads' % num_threads())
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--shapes', nargs='+', help='e.g. 64x256x56x56 (default: the four '
                        'standard shapes)')
    parser.add_argument('--quick', action='store_true', help='one shape, short budget')
    parser.add_argument('--budget', type=float, default=2.0, help='seconds per measurement')
    parser.add_argument('--out-dir', default='results')
    parser.add_argument('--threads', type=int,
                        default=int(os.environ.get('OMP_NUM_THREADS', os.cpu_count())),
                        help='OpenMP threads of every op and of the copy')
    parser.add_argument('--native-json', action='store_true', help=argparse.SUPPRESS)
    parser.add_argument('--head', action='store_true', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if 'mxnet' in sys.modules:
        raise RuntimeError('set OMP_NUM_THREADS before MXNet is imported')
    os.environ['OMP_NUM_THREADS'] = str(args.threads)  # inherited by the native subprocess
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(message)s')
    if args.shapes:
        shapes = [tuple(int(d) for d in s.split('x')) for s in args.shapes]
    else:
        shapes = QUICK_SHAPES if args.quick else SHAPES
    budget = 0.5 if args.quick else args.budget
    if args.native_json:
        rows = measure_head(shapes, budget, True) if args.head else \
            measure_native(shapes, DTYPES, budget)
        print(json.dumps(rows))
        return
    LOG.info('measuring MXNet\'s own op in a subprocess')
    native = run_native_subprocess(shapes, budget)
    LOG.info('measuring the plugin, fp32 BatchNorm and copies')
    rows = measure_plugin(shapes, DTYPES, budget)
    for row, nat in zip(rows, native):
        row.update(nat)
    save_results(args.out_dir, 'bench_op', table(rows), rows, chart)
    if args.shapes:
        return
    head_shapes = HEAD_SHAPES[:1] if args.quick else HEAD_SHAPES
    native = run_native_subprocess(head_shapes, budget, head=True)
    rows = measure_head(head_shapes, budget, False)
    for row, nat in zip(rows, native):
        row.update(nat)
    save_results(args.out_dir, 'bench_op_head', head_table(rows), rows)


if __name__ == '__main__':
    main()
