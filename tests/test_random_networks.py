"""Random Gluon pre-activation networks written the ways users write them
(F.relu, nn.Activation-style F.Activation, F.clip(0, 6), F.LeakyReLU, dense-style
concat, residual add, depthwise convs, max/avg pooling between blocks, a
BatchNorm + activation + mean head), through the flow with its defaults
(smart mode): which BatchNorms and activations stay fp32, how many
quantize/dequantize nodes, and the logits against Gluon's fp32 truth."""
import json
import random
import subprocess
import sys

import int8_arithmetic
import mxnet as mx
import numpy as np
import pytest
from mxnet.gluon import nn

import mxnet_bnq
from mxnet_bnq.layer_report import sqnr_db
from mxnet_bnq.names import BATCH_NORM_ACT_POOL_QUANTIZE

SPELLINGS = ['relu', 'Activation', 'clip', 'LeakyReLU']
FLOAT_ACTS = ('BatchNorm', 'relu', 'Activation', 'clip', 'LeakyReLU')
SEEDS = range(12)
HELD_OUT_IMAGES = 1024


def act(F, x, spelling):
    if spelling == 'relu':
        return F.relu(x)
    if spelling == 'Activation':
        return F.Activation(x, act_type='relu')
    if spelling == 'clip':
        return F.clip(x, 0, 6)
    return F.LeakyReLU(x, slope=0.1)


class PreActBlock(nn.HybridBlock):
    """BN -> act -> conv, twice; joined to the input by add, concat, or a
    projection shortcut (a 1x1 conv of the first activation, as ResNet v2)."""

    def __init__(self, channels, spelling, join, **kwargs):
        super().__init__(**kwargs)
        self.spelling, self.join = spelling, join
        with self.name_scope():
            self.bn1, self.bn2 = nn.BatchNorm(), nn.BatchNorm()
            out = channels * 2 if join == 'project' else channels
            self.conv1 = nn.Conv2D(channels, 3, padding=1, use_bias=False)
            groups = channels if join == 'depthwise' else 1
            self.conv2 = nn.Conv2D(out, 3, padding=1, use_bias=False, groups=groups)
            if join == 'project':
                self.shortcut = nn.Conv2D(out, 1, use_bias=False)

    def hybrid_forward(self, F, x):
        a = act(F, self.bn1(x), self.spelling)
        y = self.conv2(act(F, self.bn2(self.conv1(a)), self.spelling))
        if self.join == 'concat':
            return F.concat(x, y, dim=1)
        return y + (self.shortcut(a) if self.join == 'project' else x)


class RandomNet(nn.HybridBlock):
    def __init__(self, seed, **kwargs):
        super().__init__(**kwargs)
        rng = random.Random(seed)
        self.spelling = rng.choice(SPELLINGS)
        with self.name_scope():
            self.stem = nn.Conv2D(8, 3, padding=1)  # a bare conv stem
            self.blocks = nn.HybridSequential()
            channels = 8
            for _ in range(3):
                join = rng.choice(['add', 'concat', 'depthwise', 'project'])
                self.blocks.add(PreActBlock(channels, self.spelling, join))
                channels *= 2 if join in ('concat', 'project') else 1
                if rng.random() < 0.5:
                    self.blocks.add(nn.MaxPool2D() if rng.random() < 0.5 else nn.AvgPool2D())
            self.bn = nn.BatchNorm()
            self.out = nn.Dense(10)

    def hybrid_forward(self, F, x):
        y = act(F, self.bn(self.blocks(self.stem(x))), self.spelling)
        return self.out(F.mean(y, axis=(2, 3)))


def trained_net(seed):
    """A RandomNet whose BatchNorm statistics come from training-mode passes."""
    mx.random.seed(seed)
    with mx.name.NameManager():
        net = RandomNet(seed, prefix='net_')
    net.initialize(mx.init.Xavier())
    x = mx.nd.array(np.random.default_rng(seed).uniform(-1, 1, (16, 3, 16, 16)))
    for _ in range(3):
        with mx.autograd.record(train_mode=True):
            net(x).backward()
    net.hybridize()
    return net, x


def graph(block):
    return json.loads(block(mx.sym.var('data')).tojson())['nodes']


def round_trips(nodes):
    return sum(n['op'] in ('_contrib_quantize_v2', '_contrib_dequantize') for n in nodes)


# Runs MXNet's own int8 graphs without the plugin (which replaces MXNet's
# _contrib_quantized_batch_norm once loaded) and prints their logit SQNRs.
MXNET_OWN_FLOW = '''if True:
    import json, sys
    import mxnet as mx, numpy as np
    directory, seeds = sys.argv[1], json.loads(sys.argv[2])
    out = {}
    for seed in seeds:
        prefix = '%s/mxnet_%d' % (directory, seed)
        sym, args, aux = mx.model.load_checkpoint(prefix, 0)
        x, truth = np.load(prefix + '_x.npy'), np.load(prefix + '_truth.npy')
        args['data'] = mx.nd.array(x)  # the int8 weights keep their type (simple_bind would not)
        exe = sym.bind(mx.cpu(), {k: args[k] for k in sym.list_arguments()},
                       aux_states={k: aux[k] for k in sym.list_auxiliary_states()},
                       grad_req='null')
        y = exe.forward(is_train=False)[0].asnumpy().astype(np.float64)
        noise = np.sum((truth - y) ** 2)
        out[seed] = float(10 * np.log10(np.sum(truth ** 2) / noise)) if noise else float('inf')
    print(json.dumps(out))
'''


@pytest.fixture(scope='module')
def results(tmp_path_factory):
    directory = tmp_path_factory.mktemp('random_nets')
    rows = []
    for seed in SEEDS:
        net, x = trained_net(seed)
        # Calibrated on x, scored on images it has not seen: the logits of 16
        # calibration images alone (160 values) moved the SQNR by up to 0.5 dB.
        held_out = mx.nd.array(np.random.default_rng(100 + seed).uniform(
            -1, 1, (HELD_OUT_IMAGES, 3, 16, 16)))
        truth = net(held_out).asnumpy()  # Gluon's fp32 truth (not MXNet's fused fp32 executor)
        row = {'seed': seed, 'spelling': net.spelling}
        for bn_mode in ('int8', 'fp32'):
            calib = mx.io.NDArrayIter(x.asnumpy(), batch_size=16)
            q = mxnet_bnq.quantize_net(net, calib_data=calib, calib_mode='naive',
                                       quantize_mode='smart', bn_mode=bn_mode, regions=False)
            row[bn_mode] = {'nodes': graph(q), 'sqnr': sqnr_db(truth, q(held_out).asnumpy())}
        sym = net(mx.sym.var('data'))
        args = {k: v.data() for k, v in net.collect_params().items()}
        aux = {k: args.pop(k) for k in sym.list_auxiliary_states()}
        mxnet_graph, mxnet_args, mxnet_aux = mx.contrib.quantization.quantize_model_mkldnn(
            sym, args, aux, calib_mode='naive', label_names=None, quantized_dtype='auto',
            calib_data=mx.io.NDArrayIter(x.asnumpy(), batch_size=16))
        row['mxnet_round_trips'] = round_trips(json.loads(mxnet_graph.tojson())['nodes'])
        prefix = str(directory / ('mxnet_%d' % seed))
        mx.model.save_checkpoint(prefix, 0, mxnet_graph, mxnet_args, mxnet_aux)
        np.save(prefix + '_x.npy', held_out.asnumpy())
        np.save(prefix + '_truth.npy', truth.astype(np.float64))
        rows.append(row)
    proc = subprocess.run([sys.executable, '-c', MXNET_OWN_FLOW, str(directory),
                           json.dumps(list(SEEDS))], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    own = json.loads(proc.stdout.strip().splitlines()[-1])
    for row in rows:
        row['mxnet_sqnr'] = own[str(row['seed'])]
    return rows


def test_every_batchnorm_and_activation_is_quantized(results):
    """No BatchNorm or activation is left fp32.  A BatchNorm after a concat
    reads the concat's quantized parts (_contrib_quantized_concat_batch_norm);
    the head BatchNorm after an fp32 pooling of an fp32 Concat (which smart
    mode leaves fp32) runs from the fp32 values to the pooled int8
    (_contrib_batch_norm_act_global_avg_pool_quantize)."""
    fused = {'concat': 0, 'fp32_head': 0}
    for row in results:
        nodes = row['int8']['nodes']
        fused['concat'] += sum(n['op'].startswith('_contrib_quantized_concat_batch_norm')
                               for n in nodes)
        fused['fp32_head'] += sum(n['op'] == BATCH_NORM_ACT_POOL_QUANTIZE
                                  for n in nodes)
        left = [(n['name'], n['op']) for n in nodes if n['op'] in FLOAT_ACTS]
        assert not left, (row['seed'], left)
    assert fused['concat'] > 0 and fused['fp32_head'] > 0, fused


def test_no_more_round_trips_than_mxnet(results):
    for row in results:
        assert round_trips(row['int8']['nodes']) <= row['mxnet_round_trips'], row['seed']


def test_only_the_input_is_quantized(results):
    """One quantize (the input's) and no dequantize (the classifier writes
    fp32), on every network but the listed ones (checked to be still true).
    Seen: 1 on 11 networks, 4 on the listed one, 3-15 in MXNet's own flow."""
    for row in results:
        count = round_trips(row['int8']['nodes'])
        if row['seed'] in KEEP_AN_FP32_AVERAGE_POOLING_OF_A_CONCAT:
            assert count > 1, row['seed']
        else:
            assert count == 1, (row['seed'], count)


# Networks that keep dequantizes before an fp32 average pooling of an fp32
# Concat (smart mode leaves both fp32) whose output also feeds the next
# concat: the BatchNorm after the pooling reads the parts
# (_contrib_quantized_concat_avg_pool_batch_norm), but no int8 op holds the
# exact window means for the concat, and MXNet's int8 average pooling would
# round them (seed 9's head lost 1.03 dB to that).  Tried on seed 11 (each
# pooling quantized for the concat that reads it, the plugin's pooling in the
# calibrated range of the fp32 one): 1 node, but 30.15 dB against 31.26 for
# both bn_mode='fp32' and MXNet's own flow, which leave the chain fp32.
KEEP_AN_FP32_AVERAGE_POOLING_OF_A_CONCAT = {
    11: 'concat -> avg pooling -> a BatchNorm and the next concat, then concat -> max pooling '
        '-> the head',
}


@pytest.mark.skipif(not int8_arithmetic.EXACT,
                    reason='fidelity of int8 graphs needs exact int8 convolutions: '
                    + int8_arithmetic.WHY_NOT_EXACT)
def test_logits_at_least_as_close_as_mxnet_own_flow(results):
    """On every network the logits are at least as close to Gluon's fp32 as
    those of MXNet's own int8 flow (run without the plugin, whose op replaces
    MXNet's quantized BatchNorm).  Seen: 1 equal, 11 closer by 0.04 to 35 dB
    (MXNet's own flow is at 5-15 dB on 6 of these nets)."""
    for row in results:
        ours, theirs = round(row['int8']['sqnr'], 2), round(row['mxnet_sqnr'], 2)
        assert ours >= theirs, (row['seed'], ours, theirs)


@pytest.mark.skipif(not int8_arithmetic.EXACT,
                    reason='fidelity of int8 graphs needs exact int8 convolutions: '
                    + int8_arithmetic.WHY_NOT_EXACT)
def test_logits_stay_close_to_the_batchnorms_left_fp32(results):
    """Quantizing the BatchNorms MXNet leaves fp32 costs nothing on average:
    the logit SQNR against Gluon's fp32 is at least bn_mode='fp32''s on
    average, and less than 1 dB below it on every network.  Seen: 0.18 dB
    above on average, 7 of 12 equal, none below.  Seed 8 was 0.59 dB below
    while its BatchNorm read MXNet's int8 max pooling of an int8 concat
    (rescaled to the widest range); the parts pooled first made it equal.
    Seed 9 was 1.03 dB below while its head
    read an int8 average pooling (the window means rounded); the head op that
    takes the pooling in (_contrib_quantized_avg_pool_batch_norm_global_avg_pool)
    made it equal."""
    gaps = {row['seed']: row['fp32']['sqnr'] - row['int8']['sqnr'] for row in results}
    assert all(row['int8']['sqnr'] > 25 for row in results), [r['int8']['sqnr'] for r in results]
    assert np.mean(list(gaps.values())) <= 0, gaps
    assert all(gap < 1.0 for gap in gaps.values()), gaps
