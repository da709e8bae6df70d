#!/usr/bin/env python
"""Generate a calibrated quantized model from an fp32 model (MXNet + mxnet_bnq).

Flag-compatible with MXNet 1.9.1's example/quantization/imagenet_gen_qsym_mkldnn.py,
writing the same files under ./model/, but quantized with
mxnet_bnq.quantize_model_mkldnn: every BatchNorm that cannot be folded into a
convolution is quantized (no layer needs excluding for accuracy), BatchNorm+ReLU
runs as one uint8 op, and MXNet's wrong fusion of a convolution shared by a
BatchNorm and a shortcut is avoided.  Fixes over the original: --rgb-mean and
--rgb-std flags (the original calibrated --no-pretrained models with std 0, i.e.
NaN ranges), boolean flags that parse and a --shuffle-dataset that can be
turned off, a progress bar during calibration.

    python example/imagenet_gen_qsym.py --model example/models/fashion_resnet20_v2 \\
        --calib-dataset data/fashion_mnist/calib.rec --image-shape 1,28,28 \\
        --rgb-mean 0 --rgb-std 1 --batch-size 64 --num-calib-batches 10
"""
import argparse
import json
import os

import common
import mxnet as mx

import mxnet_bnq

IMAGENET_MEAN = '123.68,116.779,103.939'
IMAGENET_STD = '58.393,57.12,57.375'


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--model', default='resnet50_v1',
                   help='a gluoncv model name, or the prefix of a local model '
                        '(<prefix>-symbol.json, <prefix>-<epoch>.params)')
    p.add_argument('--epoch', type=int, default=0, help='epoch of a local model')
    common.add_bool_flag(p, 'no-pretrained', False,
                         'do not download pretrained weights: use ./model/<model> or, for a '
                         'gluoncv name without local files, random weights')
    p.add_argument('--batch-size', type=int, default=32)
    p.add_argument('--label-name', default='softmax_label')
    p.add_argument('--calib-dataset', default='data/val_256_q90.rec',
                   help='.rec file of calibration images')
    p.add_argument('--image-shape', type=common.image_shape, default='3,224,224',
                   help='C,H,W of the network input')
    p.add_argument('--rgb-mean', default=None,
                   help='per-channel mean subtracted from pixels (default: ImageNet mean for '
                        'gluoncv models, 0 for local models)')
    p.add_argument('--rgb-std', default=None,
                   help='per-channel std dividing pixels (default: ImageNet std for gluoncv '
                        'models, 1 for local models)')
    p.add_argument('--data-nthreads', type=int, default=1)
    p.add_argument('--num-calib-batches', type=int, default=10)
    common.add_bool_flag(p, 'exclude-first-conv', False,
                         'leave the first convolution fp32')
    common.add_bool_flag(p, 'shuffle-dataset', True, 'shuffle the calibration dataset')
    p.add_argument('--shuffle-chunk-seed', type=int, default=3982304)
    p.add_argument('--shuffle-seed', type=int, default=48564309)
    p.add_argument('--calib-mode', default='entropy', choices=['none', 'naive', 'entropy'])
    p.add_argument('--quantized-dtype', default='auto', choices=['auto', 'int8', 'uint8'])
    p.add_argument('--bn-mode', default='int8', choices=list(('int8', 'fp32', 'native')),
                   help="standalone BatchNorm: int8 (mxnet_bnq), fp32 (left unquantized) or "
                        "native (MXNet's own int8 op; run it without the plugin)")
    common.add_bool_flag(p, 'regions', True,
                         'run the int8 regions of the quantized graph inside mxnet_bnq '
                         '(--no-regions: MXNet runs every op)')
    common.add_bool_flag(p, 'report', False,
                         'print the per-layer BatchNorm report with SQNR on one calibration '
                         'batch')
    p.add_argument('--output-dir', default='model', help='where the files are written')
    common.add_bool_flag(p, 'quiet', False, 'suppress most of the log')
    return p


def load_fp32_model(args, logger):
    """(sym, arg_params, aux_params, prefix, is_local)"""
    if os.path.isfile(args.model + '-symbol.json'):
        sym, arg_params, aux_params = mx.model.load_checkpoint(args.model, args.epoch)
        return sym, arg_params, aux_params, os.path.basename(args.model), True
    local = os.path.join(args.output_dir, args.model)
    if args.no_pretrained and os.path.isfile(local + '-symbol.json'):
        sym, arg_params, aux_params = mx.model.load_checkpoint(local, args.epoch)
        return sym, arg_params, aux_params, args.model, True
    from gluoncv.model_zoo import get_model
    try:
        net = get_model(args.model, pretrained=not args.no_pretrained)
    except (ValueError, KeyError) as err:
        raise SystemExit('unknown model %r: not a local prefix nor a gluoncv model (%s)'
                         % (args.model, err)) from None
    except Exception as err:
        raise SystemExit('cannot get pretrained %s (%s); use --no-pretrained or a local model'
                         % (args.model, err)) from None
    if args.no_pretrained:
        logger.warning('%s has random weights (--no-pretrained): accuracy is meaningless',
                       args.model)
        mx.random.seed(0)  # reproducible random weights
        net.initialize(mx.init.Xavier())
    net.hybridize()
    net(mx.nd.zeros((1,) + args.image_shape))
    prefix = os.path.join(args.output_dir, args.model)
    net.export(prefix, epoch=0)
    logger.info('exported %s to %s-symbol.json', args.model, prefix)
    sym, arg_params, aux_params = mx.model.load_checkpoint(prefix, 0)
    return sym, arg_params, aux_params, args.model, False


def first_conv(sym):
    for node in json.loads(sym.tojson())['nodes']:
        if node['op'] == 'Convolution':
            return node['name']
    return None


def main(argv=None):
    args = build_parser().parse_args(argv)
    logger = common.setup_logging(args.quiet)
    logger.info(args)
    os.makedirs(args.output_dir, exist_ok=True)
    sym, arg_params, aux_params, name, is_local = load_fp32_model(args, logger)
    rgb_mean = args.rgb_mean or ('0' if is_local else IMAGENET_MEAN)
    rgb_std = args.rgb_std or ('1' if is_local else IMAGENET_STD)
    logger.info('input normalization: mean %s, std %s', rgb_mean, rgb_std)

    excluded = []
    if args.exclude_first_conv and first_conv(sym):
        excluded.append(first_conv(sym))
    label_names = (args.label_name,) if args.label_name in sym.list_arguments() else None
    calib_data = None
    if args.calib_mode != 'none':
        data = common.record_iter(args.calib_dataset, args.image_shape, args.batch_size, rgb_mean,
                                  rgb_std, args.label_name, args.data_nthreads,
                                  args.shuffle_dataset, args.shuffle_chunk_seed,
                                  args.shuffle_seed)
        calib_data = common.ProgressIter(data, args.num_calib_batches, 'calibration',
                                         args.quiet)
    qsym, qarg_params, qaux_params = mxnet_bnq.quantize_model_mkldnn(
        sym, arg_params, aux_params, ctx=mx.cpu(), excluded_sym_names=excluded,
        calib_mode=args.calib_mode, calib_data=calib_data,
        num_calib_examples=args.num_calib_batches * args.batch_size,
        quantized_dtype=args.quantized_dtype, label_names=label_names,
        logger=None if args.quiet else logger, bn_mode=args.bn_mode, regions=args.regions)

    suffix = '-quantized'
    if args.calib_mode != 'none':
        suffix += '-%dbatches-%s' % (args.num_calib_batches, args.calib_mode)
    if args.bn_mode != 'int8':
        suffix += '-bn%s' % args.bn_mode
    if not args.regions and args.bn_mode != 'native':
        suffix += '-noregions'
    prefix = os.path.join(args.output_dir, name + suffix)
    mx.model.save_checkpoint(prefix, args.epoch, qsym, qarg_params, qaux_params)
    logger.info('saved quantized model to %s-symbol.json and %s-%04d.params', prefix, prefix,
                args.epoch)
    if args.report:
        data = common.record_iter(args.calib_dataset, args.image_shape, args.batch_size, rgb_mean,
                                  rgb_std, args.label_name, args.data_nthreads)
        batch = data.next().data[0].asnumpy()
        rows = mxnet_bnq.report(sym, qsym, arg_params, aux_params, qarg_params, qaux_params,
                                data=batch, excluded_sym_names=excluded)
        print(mxnet_bnq.format_report(rows))
    return prefix


if __name__ == '__main__':
    main()
