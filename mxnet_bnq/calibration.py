"""The calibration run of MXNet's flow, with the one statistic the plugin adds.

MXNet's ``quantize_graph`` gives the collector for ``calib_mode`` (or takes the
user's ``LayerOutputCollector`` for ``'customize'``) and ``calib_graph`` turns
what it collected into ranges.  In between, the fp32 model runs over the
calibration data with a monitor callback.  The BNQ_QUANTIZE pass fuses some
quantized BatchNorm + ReLU pairs into one op with uint8 output, which needs the
range of the ReLU's output, a layer MXNet does not calibrate: the
``PostReluRecorder`` hands every tensor to MXNet's collector as MXNet's flow
would, and records those ReLU outputs too, with MXNet's own statistics for the
same calib_mode.
"""
import ctypes

import mxnet as mx
from mxnet.base import _LIB, NDArrayHandle, check_call, py_str
from mxnet.contrib import quantization as mxq


class PostReluRecorder:
    """A monitor callback: MXNet's `collector` plus the statistics of
    `relu_layers` ({fp32 layer output name: key of the range it gives})."""

    def __init__(self, collector, relu_layers, calib_mode, logger=None):
        self.collector = collector
        self.relu_layers = dict(relu_layers)
        self.calib_mode = calib_mode
        include = set(self.relu_layers)
        if calib_mode == 'entropy':
            self._relu = mxq._LayerHistogramCollector(include_layer=include, logger=logger)
        else:  # naive, and customize (a user's collector need not see these layers)
            self._relu = mxq._LayerOutputMinMaxCollector('auto', include_layer=include,
                                                         logger=logger)

    def collect(self, name, arr):
        if py_str(name) in self.relu_layers:
            self._relu.collect(name, _second_handle(arr))
        self.collector.collect(name, arr)

    def relu_ranges(self):
        """{key: (min, max)} of the layers, as MXNet's 'auto' calibration gives
        them ((0, th) for non-negative values, as a ReLU's, which the fused op
        writes as uint8).  A customize collector that recorded a layer itself
        gives that layer its range."""
        if self.calib_mode == 'entropy':
            ranges = mxq._get_optimal_thresholds(self._relu.hist_dict, 'auto')
        else:
            ranges = dict(self._relu.min_max_dict)
        if self.calib_mode == 'customize':
            own = getattr(self.collector, 'min_max_dict', {})
            ranges.update({k: own[k] for k in self.relu_layers if k in own})
        return {self.relu_layers[k]: v for k, v in ranges.items() if k in self.relu_layers}


def _second_handle(handle):
    """A new handle on the array behind `handle`.  MXNet's monitor gives each
    tensor one handle, which the NDArray that wraps it frees: two collectors
    wrapping the same handle would free it twice."""
    out = NDArrayHandle()
    check_call(_LIB.MXNDArrayDetach(ctypes.cast(handle, NDArrayHandle), ctypes.byref(out)))
    return out


def run_calibration(sym, arg_params, aux_params, data_names, label_names, ctx, calib_data,
                    data_shapes, num_calib_examples, collector, logger=None):
    """Runs the fp32 `sym`, bound for `data_shapes`, over `calib_data` with
    ``collector.collect`` as its monitor, as MXNet's flow does; returns the
    number of examples seen."""
    mod = mx.mod.Module(symbol=sym, data_names=data_names, label_names=label_names, context=ctx)
    # MXNet's wrapper of a DataLoader (quantize_net) has no provide_label.
    provide_label = getattr(calib_data, 'provide_label', None)
    label_shapes = provide_label if provide_label and label_names else None
    mod.bind(for_training=False, data_shapes=data_shapes, label_shapes=label_shapes)
    mod.set_params(arg_params, aux_params)
    calib_data.reset()
    # MXNet's own loop (quantize_model and quantize_net_v2 share it): it honours
    # num_calib_examples at batch granularity.
    num = mxq._collect_layer_statistics(mod, calib_data, collector, num_calib_examples, logger)
    if logger:
        logger.info('Collected layer statistics from %d examples', num)
    return num
