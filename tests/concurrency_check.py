"""Runs quantized graphs that use the plugin's ops from several Python threads
at once and compares every result with a serial run.  Used by
test_reliability.py in a subprocess (so MXNET_ENGINE_TYPE can be chosen).

    python concurrency_check.py THREADS ITERATIONS   ->  prints "identical N" or fails
"""
import sys
import threading

import mxnet as mx
import numpy as np

import mxnet_bnq
import small_nets


def build(net, seed):
    sym = net()
    shape = (4, 4, 8, 8)
    args, aux = small_nets.random_params(sym, shape, seed)
    calib = np.random.default_rng(seed).normal(0, 1, (16,) + shape[1:]).astype('f')
    qsym, qargs, qaux = mxnet_bnq.quantize_model_mkldnn(
        sym, args, aux, calib_mode='naive', label_names=None, quantized_dtype='auto',
        calib_data=mx.io.NDArrayIter(calib, batch_size=8))
    inputs = [np.random.default_rng(seed * 100 + i).normal(0, 1, shape).astype('f')
              for i in range(4)]
    return qsym, qargs, qaux, inputs


def main(num_threads, iterations):
    models = [build(net, seed) for seed, net in
              enumerate([small_nets.bn_after_add, small_nets.bn_after_pool] * 2)]
    expected = [[small_nets.forward(q, a, x, inp)[0] for inp in inputs]
                for q, a, x, inputs in models]
    failures = []

    def worker(k):
        qsym, qargs, qaux, inputs = models[k % len(models)]
        for it in range(iterations):
            i = it % len(inputs)
            (out,) = small_nets.forward(qsym, qargs, qaux, inputs[i])
            if not np.array_equal(out, expected[k % len(models)][i]):
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
    main(int(sys.argv[1]), int(sys.argv[2]))
