#!/usr/bin/env python3
"""Train gluoncv's cifar_resnet20_v2 on Fashion-MNIST (CPU, deterministic) and export it.

Input: raw grey pixels 0..255 as float32, shape (N, 1, 28, 28), input name ``data``.
The network's first layer, ``BatchNorm(scale=False, center=False)``, does the input
normalization. In MXNet 1.9.1 that layer never updates its running statistics while
training (nothing needs its backward, where the update happens), so this script sets
its ``running_mean`` / ``running_var`` explicitly to the training set's pixel mean and
variance. During training the layer is switched to ``use_global_stats=True`` so that it
normalizes with exactly those fixed statistics (training and inference then see the
same input transform); it is switched back before export, so the exported graph is the
stock gluoncv one. After export the script checks that the exported input-BN statistics
are the dataset's and evaluates the model on the 10k test set three ways: the Gluon net
in inference mode, the exported symbol through ``mx.mod.Module`` with
``MXNET_SUBGRAPH_BACKEND=NONE``, and the same with MXNet's default (MKLDNN) backend,
which in 1.9.1 mis-fuses the bare conv stem of this pre-activation model.

Determinism: ``MXNET_ENGINE_TYPE=NaiveEngine`` is set before mxnet is imported and
mx / numpy / random are seeded from ``--seed``; the shuffling and augmentation use a
numpy ``RandomState(seed)``.

Data is read from the idx gz files through ``pack_fashion_mnist`` (same folder).

Outputs: ``<out-prefix>-symbol.json`` and ``<out-prefix>-0000.params``.
"""
import os

os.environ["MXNET_ENGINE_TYPE"] = "NaiveEngine"  # before importing mxnet: determinism

import argparse
import logging
import math
import random
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pack_fashion_mnist  # noqa: E402

LOG = logging.getLogger("train_fashion_resnet_v2")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Train cifar_resnet20_v2 on Fashion-MNIST")
    p.add_argument("--data-dir", default=pack_fashion_mnist.DEFAULT_DATA_DIR)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1, help="peak learning rate")
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--wd", type=float, default=5e-4)
    p.add_argument("--warmup-epochs", type=float, default=1.0,
                   help="linear warm-up, then cosine decay to 0 per iteration")
    p.add_argument("--pad", type=int, default=2,
                   help="random-crop padding in pixels (0: no crop)")
    p.add_argument("--no-flip", action="store_true", help="no random horizontal flip")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-prefix", default="example/models/fashion_resnet20_v2")
    p.add_argument("--limit-batches", type=int, default=0,
                   help="stop each epoch after this many batches (timing runs)")
    p.add_argument("--eval-batch-size", type=int, default=500)
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    return p.parse_args(argv)


def input_bn(net):
    bn = net.features[0]
    assert type(bn).__name__ == "BatchNorm", bn
    return bn


def augment(rng, images_u8, pad, flip):
    """images_u8: (B, 28, 28) uint8 -> float32 (B, 1, 28, 28), random crop/flip."""
    b, h, w = images_u8.shape
    if pad > 0:
        padded = np.zeros((b, h + 2 * pad, w + 2 * pad), np.uint8)
        padded[:, pad:pad + h, pad:pad + w] = images_u8
        oy = rng.randint(0, 2 * pad + 1, size=b)
        ox = rng.randint(0, 2 * pad + 1, size=b)
        out = np.empty_like(images_u8)
        for i in range(b):
            out[i] = padded[i, oy[i]:oy[i] + h, ox[i]:ox[i] + w]
    else:
        out = images_u8.copy()
    if flip:
        mask = rng.rand(b) < 0.5
        out[mask] = out[mask, :, ::-1]
    return out.astype(np.float32)[:, None]


def evaluate_gluon(net, x, y, batch_size, mx):
    correct = 0
    for s in range(0, len(x), batch_size):
        data = mx.nd.array(x[s:s + batch_size, None].astype(np.float32))
        pred = net(data).argmax(axis=1).asnumpy()
        correct += int((pred == y[s:s + batch_size]).sum())
    return correct / len(x)


def evaluate_module(prefix, x, y, batch_size, subgraph_backend, mx):
    """Top-1 of the exported model through mx.mod.Module (simple_bind).

    subgraph_backend: value for MXNET_SUBGRAPH_BACKEND at bind time, or None for
    MXNet's default (unset)."""
    old = os.environ.get("MXNET_SUBGRAPH_BACKEND")
    if subgraph_backend is None:
        os.environ.pop("MXNET_SUBGRAPH_BACKEND", None)
    else:
        os.environ["MXNET_SUBGRAPH_BACKEND"] = subgraph_backend
    try:
        sym, arg_params, aux_params = mx.model.load_checkpoint(prefix, 0)
        mod = mx.mod.Module(sym, data_names=["data"], label_names=None, context=mx.cpu())
        mod.bind(data_shapes=[("data", (batch_size, 1, 28, 28))], for_training=False)
        mod.set_params(arg_params, aux_params)
        correct = 0
        for s in range(0, len(x), batch_size):
            xb = x[s:s + batch_size]
            n = len(xb)
            if n < batch_size:  # pad the last batch
                xb = np.concatenate([xb, np.zeros((batch_size - n,) + xb.shape[1:], xb.dtype)])
            batch = mx.io.DataBatch([mx.nd.array(xb[:, None].astype(np.float32))])
            mod.forward(batch, is_train=False)
            pred = mod.get_outputs()[0].argmax(axis=1).asnumpy()[:n]
            correct += int((pred == y[s:s + n]).sum())
        return correct / len(x)
    finally:
        if old is None:
            os.environ.pop("MXNET_SUBGRAPH_BACKEND", None)
        else:
            os.environ["MXNET_SUBGRAPH_BACKEND"] = old


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    import mxnet as mx
    from gluoncv.model_zoo import get_model
    from mxnet import autograd, gluon
    from tqdm import tqdm

    LOG.info("args: %s", vars(args))
    LOG.info("MXNET_ENGINE_TYPE=%s, mxnet %s", os.environ.get("MXNET_ENGINE_TYPE"),
             mx.__version__)
    random.seed(args.seed)
    np.random.seed(args.seed)
    mx.random.seed(args.seed)
    rng = np.random.RandomState(args.seed)

    train_x, train_y = pack_fashion_mnist.load_fashion_mnist(args.data_dir, "train")
    test_x, test_y = pack_fashion_mnist.load_fashion_mnist(args.data_dir, "test")
    pix = train_x.astype(np.float64)
    mean, var = float(pix.mean()), float(pix.var())
    del pix
    LOG.info("train %s test %s; training-set pixel mean %.6f var %.6f (std %.6f)",
             train_x.shape, test_x.shape, mean, var, math.sqrt(var))

    ctx = mx.cpu()
    net = get_model("cifar_resnet20_v2", classes=10, pretrained=False)
    net.initialize(mx.init.Xavier(), ctx=ctx)
    net(mx.nd.zeros((1, 1, 28, 28)))  # finish deferred initialization
    bn = input_bn(net)
    bn.running_mean.set_data(mx.nd.array([mean], dtype=np.float32))
    bn.running_var.set_data(mx.nd.array([var], dtype=np.float32))
    bn._kwargs["use_global_stats"] = True  # train with the fixed dataset statistics
    net.hybridize(static_alloc=True, static_shape=True)

    steps_per_epoch = len(train_x) // args.batch_size  # drop the last partial batch
    if args.limit_batches:
        steps_per_epoch = min(steps_per_epoch, args.limit_batches)
    total_steps = steps_per_epoch * args.epochs
    warmup_steps = int(round(args.warmup_epochs * steps_per_epoch))

    def lr_at(step):
        if step < warmup_steps:
            return args.lr * (step + 1) / warmup_steps
        t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * args.lr * (1 + math.cos(math.pi * t))

    trainer = gluon.Trainer(net.collect_params(), "sgd",
                            {"learning_rate": args.lr, "momentum": args.momentum,
                             "wd": args.wd})
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()

    t_start = time.time()
    step = 0
    for epoch in range(args.epochs):
        t0 = time.time()
        order = rng.permutation(len(train_x))
        loss_sum, correct, seen = 0.0, 0, 0
        bar = tqdm(range(steps_per_epoch), desc="epoch %d/%d" % (epoch + 1, args.epochs),
                   disable=args.no_progress, mininterval=5, ascii=True)
        for b in bar:
            idx = order[b * args.batch_size:(b + 1) * args.batch_size]
            xb = augment(rng, train_x[idx], args.pad, not args.no_flip)
            yb = train_y[idx]
            data = mx.nd.array(xb, ctx=ctx)
            label = mx.nd.array(yb.astype(np.float32), ctx=ctx)
            trainer.set_learning_rate(lr_at(step))
            with autograd.record():
                out = net(data)
                loss = loss_fn(out, label)
            loss.backward()
            trainer.step(args.batch_size)
            step += 1
            loss_sum += float(loss.sum().asscalar())
            correct += int((out.argmax(axis=1).asnumpy() == yb).sum())
            seen += len(yb)
            bar.set_postfix(loss="%.4f" % (loss_sum / seen), acc="%.4f" % (correct / seen),
                            lr="%.4f" % lr_at(step - 1), refresh=False)
        bar.close()
        t_train = time.time() - t0
        test_acc = evaluate_gluon(net, test_x, test_y, args.eval_batch_size, mx)
        LOG.info("epoch %d/%d: loss %.4f train acc %.4f test acc %.4f lr %.5f "
                 "train time %.1f s (+ eval %.1f s)", epoch + 1, args.epochs,
                 loss_sum / seen, correct / seen, test_acc, lr_at(step - 1), t_train,
                 time.time() - t0 - t_train)
    LOG.info("total training time %.1f s", time.time() - t_start)

    # Back to the stock graph (use_global_stats=False) for export; the running
    # statistics must still be the dataset's (nothing updated them).
    bn._kwargs["use_global_stats"] = False
    net.hybridize(static_alloc=True, static_shape=True)  # drops the cached graph
    got_mean = float(bn.running_mean.data().asscalar())
    got_var = float(bn.running_var.data().asscalar())
    if not (np.isclose(got_mean, mean, rtol=1e-6) and np.isclose(got_var, var, rtol=1e-6)):
        raise RuntimeError("input BN statistics changed during training: %r %r"
                           % (got_mean, got_var))
    gluon_acc = evaluate_gluon(net, test_x, test_y, args.eval_batch_size, mx)

    out_dir = os.path.dirname(args.out_prefix)
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
    net.export(args.out_prefix, epoch=0)
    sym_file, par_file = args.out_prefix + "-symbol.json", args.out_prefix + "-0000.params"
    LOG.info("exported %s and %s (%.0f kB)", sym_file, par_file,
             os.path.getsize(par_file) / 1e3)

    sym, arg_params, aux_params = mx.model.load_checkpoint(args.out_prefix, 0)
    if sym.list_arguments()[0] != "data":
        raise RuntimeError("first input is %r, not 'data'" % sym.list_arguments()[0])
    rm_name, rv_name = bn.running_mean.name, bn.running_var.name
    exp_mean = float(aux_params[rm_name].asscalar())
    exp_var = float(aux_params[rv_name].asscalar())
    LOG.info("exported input BN %s = %.6f, %s = %.6f", rm_name, exp_mean, rv_name, exp_var)
    if not (np.isclose(exp_mean, mean, rtol=1e-6) and np.isclose(exp_var, var, rtol=1e-6)):
        raise RuntimeError("exported input BN statistics are not the dataset's")

    acc_none = evaluate_module(args.out_prefix, test_x, test_y, args.eval_batch_size,
                               "NONE", mx)
    acc_default = evaluate_module(args.out_prefix, test_x, test_y, args.eval_batch_size,
                                  None, mx)
    LOG.info("test top-1 (10k): gluon %.4f | Module MXNET_SUBGRAPH_BACKEND=NONE %.4f | "
             "Module default backend %.4f", gluon_acc, acc_none, acc_default)
    if abs(acc_none - gluon_acc) > 1e-3:
        LOG.warning("executor (NONE) accuracy differs from the Gluon accuracy")
    if abs(acc_default - gluon_acc) > 1e-3:
        LOG.warning("executor with the default subgraph backend differs from Gluon "
                    "(MXNet 1.9.1 conv+BN+ReLU fusion bug, see mxnet_bnq.fp32_preparation)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
