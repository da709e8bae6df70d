"""Runs MXNet's own _contrib_quantized_batch_norm (never the plugin's).

Used by the parity tests in a subprocess, because the plugin replaces the op
for the rest of the process that loads it.

    python native_mxnet_op.py inputs.npz outputs.npz '{"eps": "0.001", ...}'
"""
import json
import sys

import mxnet as mx
import numpy as np


def main(inputs_path, outputs_path, attrs_json):
    assert '_contrib_quantized_batch_norm_relu' not in \
        mx.operator.get_all_registered_operators(), 'the plugin must not be loaded here'
    inputs = np.load(inputs_path)
    args = [mx.nd.array(inputs['q'], dtype=inputs['q'].dtype)]
    args += [mx.nd.array(inputs[k]) for k in ('gamma', 'beta', 'mean', 'var')]
    args += [mx.nd.array([float(inputs['min_data'])]), mx.nd.array([float(inputs['max_data'])])]
    out = mx.nd.contrib.quantized_batch_norm(*args, **json.loads(attrs_json))
    np.savez(outputs_path, q=out[0].asnumpy(), min_output=out[1].asnumpy(),
             max_output=out[2].asnumpy())


if __name__ == '__main__':
    main(*sys.argv[1:4])
