"""gluoncv models with random weights (no download), exported once per session."""
import os

import mxnet as mx

# Small inputs keep the tests fast where the network ends in global pooling;
# densenet121 and inceptionv3 end in fixed 7x7 and 8x8 pooling.
INPUT_SHAPES = {
    'resnet18_v1': (1, 3, 64, 64),
    'resnet50_v1': (1, 3, 64, 64),
    'resnet18_v2': (1, 3, 64, 64),
    'resnet50_v2': (1, 3, 64, 64),
    'cifar_resnet20_v2': (1, 3, 32, 32),
    'mobilenet1.0': (1, 3, 64, 64),
    'mobilenetv2_1.0': (1, 3, 64, 64),
    'densenet121': (1, 3, 224, 224),
    'inceptionv3': (1, 3, 299, 299),
}


def export(name, directory, classes=10):
    """(sym, args, aux) of gluoncv model `name`, initialized with a fixed seed."""
    prefix = os.path.join(directory, name)
    if not os.path.exists(prefix + '-symbol.json'):
        from gluoncv.model_zoo import get_model
        mx.random.seed(0)
        with mx.name.NameManager():  # the same layer names whatever ran before
            net = get_model(name, pretrained=False, classes=classes)
        net.initialize(mx.init.Xavier())
        net.hybridize()
        net(mx.nd.zeros(INPUT_SHAPES[name]))
        net.export(prefix, epoch=0)
    return mx.model.load_checkpoint(prefix, 0)
