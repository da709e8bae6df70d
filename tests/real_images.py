"""Real labelled images for tests: Fashion-MNIST from Debian's dataset-fashion-mnist."""
import os
import sys

import mxnet as mx
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                'python'))
import pack_fashion_mnist  # noqa: E402  pylint: disable=wrong-import-position


def fashion_mnist(split='test', count=None):
    """(images float32 (N, 1, 28, 28) with raw 0..255 pixels, labels int)."""
    images, labels = pack_fashion_mnist.load_fashion_mnist(split=split)
    if count is not None:
        images, labels = images[:count], labels[:count]
    return images[:, None].astype(np.float32), labels.astype(np.int64)


def set_batch_norm_statistics(net, images, batch_size=64, steps=20):
    """Running statistics from forward/backward passes in training mode over
    real images (MXNet's oneDNN BatchNorm updates them in backward); weights
    stay as they are.  A BatchNorm without gamma and beta (on the input) never
    gets a backward, so its statistics are set from the data directly."""
    for step in range(steps):
        batch = mx.nd.array(images[(step * batch_size) % len(images):][:batch_size])
        with mx.autograd.record(train_mode=True):
            out = net(batch)
        out.backward()
    for block in _batch_norms(net):
        if block.gamma.grad_req == 'null' and block.beta.grad_req == 'null':
            x = images.transpose(1, 0, 2, 3).reshape(images.shape[1], -1)
            block.running_mean.set_data(mx.nd.array(x.mean(axis=1)))
            block.running_var.set_data(mx.nd.array(x.var(axis=1)))


def _batch_norms(block):
    if isinstance(block, mx.gluon.nn.BatchNorm):
        yield block
    for child in block._children.values():
        yield from _batch_norms(child)
