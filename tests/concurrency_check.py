"""Runs quantized graphs that use the plugin's ops (or, with "ops", the ops
themselves, imperatively) from several Python threads at once and compares
every result with a serial run.  Used by test_reliability.py in a subprocess
(so MXNET_ENGINE_TYPE can be chosen).

    python concurrency_check.py THREADS ITERATIONS [int8|fp32|ops]  ->  "identical N"
"""
import sys
import threading

import mxnet as mx
import numpy as np
import small_nets

import mxnet_bnq


def build(net, seed, bn_mode='int8'):
    sym = net()
    shape = (4, 4, 8, 8)
    args, aux = small_nets.random_params(sym, shape, seed)
    calib = np.random.default_rng(seed).normal(0, 1, (16,) + shape[1:]).astype('f')
    qsym, qargs, qaux = mxnet_bnq.quantize_model_mkldnn(
        sym, args, aux, calib_mode='naive', label_names=None, quantized_dtype='auto',
        calib_data=mx.io.NDArrayIter(calib, batch_size=8), bn_mode=bn_mode)
    inputs = [np.random.default_rng(seed * 100 + i).normal(0, 1, shape).astype('f')
              for i in range(4)]
    return qsym, qargs, qaux, inputs


def graph_runs(bn_mode):
    """One run function per model, each over its own inputs."""
    models = [build(net, seed, bn_mode) for seed, net in
              enumerate([small_nets.bn_after_add, small_nets.bn_after_pool] * 2)]
    return [[(lambda q=q, a=a, x=x, inp=inp: small_nets.forward(q, a, x, inp)[0])
             for inp in inputs] for q, a, x, inputs in models]


def op_runs():
    """The plugin's ops on quantized data (BN, BN+ReLU, BN+ReLU+pooling; each a
    group) called imperatively on a few cases."""
    from bn_cases import make_case, run_op
    mxnet_bnq.load()
    rng = np.random.default_rng(0)
    cases = [make_case(rng, shape, in_dtype=dtype) for shape in ((4, 8, 6, 6), (2, 16, 5, 5))
             for dtype in ('int8', 'uint8')]
    return [[(lambda c=c, r=relu, p=pool: run_op(c, r, p, min_calib_range=-2,
                                                 max_calib_range=2)[0])
             for c in cases] for relu, pool in ((False, False), (True, False), (True, True))]


def main(num_threads, iterations, mode='int8'):
    runs = op_runs() if mode == 'ops' else graph_runs(mode)
    expected = [[run() for run in group] for group in runs]
    failures = []

    def worker(k):
        group = runs[k % len(runs)]
        for it in range(iterations):
            i = it % len(group)
            if not np.array_equal(group[i](), expected[k % len(runs)][i]):
                failures.append((k, it))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(num_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise SystemExit('results differ from the serial run: %s' % failures[:10])
    print('identical', num_threads * iterations)


if __name__ == '__main__':
    main(int(sys.argv[1]), int(sys.argv[2]), *sys.argv[3:4])
