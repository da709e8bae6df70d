"""The fp32 preparation before MXNet's flow: every spelling of ReLU becomes the
Activation(act_type='relu') that MXNet fuses and quantizes, with the fp32
output unchanged bit for bit."""
import json

import int8_arithmetic
import mxnet as mx
import numpy as np
import pytest
from mxnet.gluon import nn

import mxnet_bnq
from mxnet_bnq.graph_runner import run_symbol, subgraph_backend

SPELLINGS = {
    'F.relu': lambda F, x: F.relu(x),
    'LeakyReLU slope 0': lambda F, x: F.LeakyReLU(x, act_type='leaky', slope=0.0),
    'Activation': lambda F, x: F.Activation(x, act_type='relu'),
}


class PreActNet(nn.HybridBlock):
    """conv -> BN -> relu -> conv -> BN -> relu -> conv + shortcut -> BN -> relu
    -> global average pooling -> dense, each ReLU spelled by `spellings`."""

    def __init__(self, spellings, **kwargs):
        super().__init__(**kwargs)
        self.relus = [SPELLINGS[s] for s in spellings]
        with self.name_scope():
            self.stem, self.bn0 = nn.Conv2D(8, 3, padding=1), nn.BatchNorm()
            self.conv1, self.bn1 = nn.Conv2D(8, 3, padding=1), nn.BatchNorm()
            self.conv2, self.bn2 = nn.Conv2D(8, 3, padding=1), nn.BatchNorm()
            self.fc = nn.Dense(5)

    def hybrid_forward(self, F, x):
        y = self.relus[0](F, self.bn0(self.stem(x)))
        z = self.relus[1](F, self.bn1(self.conv1(y)))
        y = self.relus[2](F, self.bn2(self.conv2(z) + y))
        return self.fc(F.Pooling(y, kernel=(1, 1), global_pool=True, pool_type='avg'))


def exported(spellings, tmp_path, seed=0):
    mx.random.seed(seed)
    net = PreActNet(spellings)
    net.initialize(mx.init.Xavier())
    net.hybridize()
    x = mx.nd.random.normal(shape=(8, 3, 12, 12))
    net(x)  # parameters get their shapes
    for bn in (net.bn0, net.bn1, net.bn2):  # BatchNorm statistics that are not the identity
        bn.running_mean.set_data(mx.nd.random.normal(0, 0.3, bn.running_mean.shape))
        bn.running_var.set_data(mx.nd.random.uniform(0.5, 2, bn.running_var.shape))
    truth = net(x).asnumpy()
    net.export(str(tmp_path / 'net'), 0)
    sym, args, aux = mx.model.load_checkpoint(str(tmp_path / 'net'), 0)
    return sym, args, aux, x.asnumpy(), truth


def ops(sym):
    return [n['op'] for n in json.loads(sym.tojson())['nodes'] if n['op'] != 'null']


@pytest.mark.parametrize('spellings', [('F.relu',) * 3, ('LeakyReLU slope 0',) * 3,
                                       ('F.relu', 'LeakyReLU slope 0', 'Activation')])
def test_every_relu_spelling_becomes_activation_with_the_same_fp32_bits(spellings, tmp_path):
    sym, args, aux, x, truth = exported(spellings, tmp_path)
    prepared, changes = mxnet_bnq.canonical_activations(sym)
    assert len(changes) == sum(s != 'Activation' for s in spellings)
    assert ops(prepared).count('Activation') == 3
    assert 'relu' not in ops(prepared) and 'LeakyReLU' not in ops(prepared)
    assert prepared.list_arguments() == sym.list_arguments()
    assert prepared.list_outputs() == sym.list_outputs()
    with subgraph_backend('NONE'):
        (before,) = run_symbol(sym, args, aux, x)
        (after,) = run_symbol(prepared, args, aux, x)
    np.testing.assert_array_equal(after, before)
    np.testing.assert_allclose(after, truth, rtol=1e-4, atol=1e-4 * np.abs(truth).max())


def test_other_activations_are_left_alone():
    data = mx.sym.var('data')
    y = mx.sym.LeakyReLU(data, act_type='leaky', slope=0.1, name='leaky')
    y = mx.sym.LeakyReLU(y, act_type='elu', slope=0.0, name='elu')
    y = mx.sym.Activation(y, act_type='tanh', name='tanh')
    prepared, changes = mxnet_bnq.canonical_activations(y)
    assert changes == [] and prepared is y


@pytest.mark.parametrize('spellings', [('F.relu',) * 3, ('LeakyReLU slope 0',) * 3])
def test_the_flow_quantizes_every_relu_spelling(spellings, tmp_path):
    """With F.relu or LeakyReLU(slope=0), MXNet alone would fuse conv+BN without
    its ReLU and leave the ReLUs and the head's BatchNorm fp32; after the
    preparation everything between the input's quantize and the output is int8."""
    sym, args, aux, x, truth = exported(spellings, tmp_path)
    qsym, qargs, qaux = mxnet_bnq.quantize_model_mkldnn(
        sym, args, aux, calib_mode='naive', calib_data=mx.io.NDArrayIter(x, batch_size=8),
        num_calib_examples=8, quantized_dtype='auto', label_names=None, regions=False)
    names = ops(qsym)
    assert names.count('_contrib_quantize_v2') == 1, names
    assert not {'relu', 'LeakyReLU', 'Activation', 'BatchNorm', '_contrib_dequantize'} & set(names)
    assert names.count('_sg_mkldnn_conv') == 3, names
    (got,) = run_symbol(qsym, qargs, qaux, x)
    sqnr = 10 * np.log10(np.sum(truth ** 2) / np.sum((got - truth) ** 2))
    # Fidelity needs exact int8 convolutions (16.4 dB here without VNNI, all MXNet's).
    assert sqnr > 20 or not int8_arithmetic.EXACT, sqnr
