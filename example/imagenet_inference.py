#!/usr/bin/env python
"""Score a model (fp32 or quantized) on a .rec dataset, or benchmark it on
synthetic data; flag-compatible with MXNet 1.9.1's
example/quantization/imagenet_inference.py.

The plugin is loaded only when the symbol needs it, so a model quantized with
MXNet's own BatchNorm (--bn-mode native) runs with MXNet's numerics.  An fp32
symbol goes through mxnet_bnq.prepare_fp32 first (every ReLU spelling as the
Activation MXNet fuses; the fusion guard, as MXNet's fusion of a convolution
shared by a BatchNorm and a shortcut is wrong).

    python example/imagenet_inference.py \\
        --symbol-file model/fashion_resnet20_v2-quantized-10batches-entropy-symbol.json \\
        --param-file model/fashion_resnet20_v2-quantized-10batches-entropy-0000.params \\
        --dataset data/fashion_mnist/val.rec --image-shape 1,28,28 --rgb-mean 0 --rgb-std 1
"""
import argparse
import json
import logging
import time

import common
import mxnet as mx
import numpy as np

import mxnet_bnq

QUANTIZED_OP_PREFIXES = ('_contrib_quantize', '_contrib_quantized', '_sg_mkldnn')


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--ctx', default='cpu', choices=['cpu', 'gpu'])
    common.add_bool_flag(p, 'benchmark', False, 'time synthetic data instead of scoring')
    p.add_argument('--symbol-file', required=True)
    p.add_argument('--param-file', required=True)
    p.add_argument('--dataset', default='./data/val_256_q90.rec')
    p.add_argument('--label-name', default='softmax_label')
    p.add_argument('--rgb-mean', default='0,0,0')
    p.add_argument('--rgb-std', default='1,1,1')
    p.add_argument('--image-shape', type=common.image_shape, default='3,224,224')
    p.add_argument('--data-nthreads', type=int, default=1)
    p.add_argument('--num-skipped-batches', type=int, default=0)
    p.add_argument('--num-inference-batches', type=int, default=0,
                   help='batches to score (0: the whole dataset)')
    p.add_argument('--batch-size', type=int, default=32)
    p.add_argument('--data-layer-type', default='float32', choices=['float32', 'int8', 'uint8'],
                   help='data type of the data layer (images and --benchmark input); int8 / '
                        'uint8 only for models whose data input takes it, e.g. a first '
                        'quantize_v2')
    p.add_argument('--output-json', default=None, help='also write the results to this file')
    p.add_argument('--save-outputs', default=None,
                   help='save the model outputs of the scored images (.npy), e.g. to compare '
                        'a quantized model with its fp32 model')
    common.add_bool_flag(p, 'quiet', False, 'suppress most of the log')
    return p


def is_quantized(sym):
    return any(n['op'].startswith(QUANTIZED_OP_PREFIXES)
               for n in json.loads(sym.tojson())['nodes'])


def load_model(symbol_file, param_file, logger):
    with open(symbol_file) as f:
        text = f.read()
    try:
        plugin = mxnet_bnq.needs_plugin(text)
    except ValueError as err:
        raise SystemExit('%s is not a valid symbol file (%s)' % (symbol_file, err)) from None
    if plugin:  # before parsing: the plugin's ops must be registered first
        try:
            logger.info('the model uses mxnet_bnq ops: loaded %s', mxnet_bnq.load())
        except mxnet_bnq.PluginLoadError as err:
            raise SystemExit('%s was quantized with mxnet_bnq and needs its plugin, which cannot '
                             'be loaded (MXNet\'s own op would compute different numbers): %s'
                             % (symbol_file, err)) from None
    try:
        sym = mx.sym.load_json(text)
        saved = mx.nd.load(param_file)
    except mx.MXNetError as err:
        raise SystemExit('cannot load the model %s / %s: %s'
                         % (symbol_file, param_file, str(err).strip().splitlines()[-1])) from None
    arg_params = {k[4:]: v for k, v in saved.items() if k.startswith('arg:')}
    aux_params = {k[4:]: v for k, v in saved.items() if k.startswith('aux:')}
    if not plugin and not is_quantized(sym):
        sym, changes = mxnet_bnq.prepare_fp32(sym)
        for change in changes:
            logger.info('fp32 preparation: %s', change)
    return sym, arg_params, aux_params


def bind(sym, arg_params, aux_params, data_shape, ctx, label_name, dtype='float32'):
    label_names = [label_name] if label_name in sym.list_arguments() else None
    mod = mx.mod.Module(symbol=sym, context=ctx, label_names=label_names)
    try:
        mod.bind(for_training=False, data_shapes=[mx.io.DataDesc('data', data_shape, dtype)])
    except (mx.MXNetError, RuntimeError) as err:  # simple_bind wraps MXNetError
        if dtype == 'float32':
            raise
        raise SystemExit('--data-layer-type %s: cannot bind the model with %s data (%s)'
                         % (dtype, dtype, str(err).strip().splitlines()[-1].strip())) from None
    mod.set_params(arg_params, aux_params)
    return mod


def score(mod, data, num_skipped, num_batches, quiet, outputs=None):
    """top-1, top-5, images, seconds of forward passes; appends each batch's
    outputs to the list `outputs` if given."""
    total = correct1 = correct5 = 0
    seconds = 0.0
    limit = num_batches if num_batches > 0 else None
    for _ in range(num_skipped):
        data.next()
    with common.tqdm(total=limit, desc='inference', unit='batch', disable=quiet) as bar:
        for i, batch in enumerate(data):
            if limit is not None and i >= limit:
                break
            start = time.perf_counter()
            mod.forward(batch, is_train=False)
            out = mod.get_outputs()[0].asnumpy()
            seconds += time.perf_counter() - start
            keep = out.shape[0] - batch.pad
            if outputs is not None:
                outputs.append(out[:keep])
            labels = batch.label[0].asnumpy()[:keep].astype(np.int64)
            top5 = np.argsort(-out[:keep], axis=1)[:, :5]
            correct1 += int(np.sum(top5[:, 0] == labels))
            correct5 += int(np.sum((top5 == labels[:, None]).any(axis=1)))
            total += keep
            bar.update(1)
    return correct1 / max(total, 1), correct5 / max(total, 1), total, seconds


def benchmark(mod, shape, dtype, num_batches, quiet):
    low, high = (-127, 128) if dtype == 'int8' else (0, 256)
    data = mx.nd.array(np.random.randint(low, high, size=shape), dtype=dtype)
    batch = mx.io.DataBatch(data=[data], label=None)
    for _ in range(3):  # warm-up
        mod.forward(batch, is_train=False)
        mod.get_outputs()[0].wait_to_read()
    start = time.perf_counter()
    for _ in common.tqdm(range(num_batches), desc='benchmark', unit='batch', disable=quiet):
        mod.forward(batch, is_train=False)
        mod.get_outputs()[0].wait_to_read()
    return time.perf_counter() - start


def main(argv=None):
    args = build_parser().parse_args(argv)
    logger = common.setup_logging(args.quiet)
    logger.info(args)
    if args.ctx == 'gpu':
        raise SystemExit('mxnet_bnq runs on CPU only (--ctx cpu)')
    ctx = mx.cpu()
    sym, arg_params, aux_params = load_model(args.symbol_file, args.param_file, logger)
    shape = (args.batch_size,) + args.image_shape
    mod = bind(sym, arg_params, aux_params, shape, ctx, args.label_name, args.data_layer_type)
    result = {'symbol_file': args.symbol_file, 'batch_size': args.batch_size}
    if args.benchmark:
        num = args.num_inference_batches or 100
        seconds = benchmark(mod, shape, args.data_layer_type, num, args.quiet)
        result.update(images=num * args.batch_size, seconds=seconds,
                      images_per_second=num * args.batch_size / seconds)
        print('batch size %d, %.1f images/s' % (args.batch_size, result['images_per_second']))
    else:
        data = common.record_iter(args.dataset, args.image_shape, args.batch_size, args.rgb_mean,
                                  args.rgb_std, args.label_name, args.data_nthreads,
                                  dtype=args.data_layer_type)
        outputs = [] if args.save_outputs else None
        top1, top5, images, seconds = score(mod, data, args.num_skipped_batches,
                                            args.num_inference_batches, args.quiet, outputs)
        if outputs is not None:
            np.save(args.save_outputs, np.concatenate(outputs))
        result.update(top1=top1, top5=top5, images=images, seconds=seconds,
                      images_per_second=images / max(seconds, 1e-9))
        print('top-1 %.4f  top-5 %.4f  on %d images, %.1f images/s (batch size %d)'
              % (top1, top5, images, result['images_per_second'], args.batch_size))
    common.write_json(args.output_json, result)
    return result


if __name__ == '__main__':
    logging.getLogger('mxnet').setLevel(logging.WARNING)
    main()
