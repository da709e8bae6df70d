"""Shared pieces of the example scripts: flags that parse, data iterators over
.rec files, and a progress bar for long loops."""
import argparse
import json
import logging
import os
import sys

import mxnet as mx
from tqdm import tqdm  # noqa: F401  (re-exported for the scripts)


def str2bool(text):
    """'yes/true/1' or 'no/false/0' (argparse's type=bool takes any text as True)."""
    value = str(text).strip().lower()
    if value in ('1', 'true', 'yes', 'y', 'on'):
        return True
    if value in ('0', 'false', 'no', 'n', 'off'):
        return False
    raise argparse.ArgumentTypeError('expected a boolean, got %r' % text)


def add_bool_flag(parser, name, default, help_text):
    """--name / --no-name, and --name=true|false."""
    dest = name.replace('-', '_')
    parser.add_argument('--' + name, dest=dest, nargs='?', const=True, default=default,
                        type=str2bool, help=help_text)  # the scripts' formatter adds the default
    parser.add_argument('--no-' + name, dest=dest, action='store_false', help=argparse.SUPPRESS)


def parse_floats(text, name, count=None):
    try:
        values = [float(v) for v in str(text).split(',')]
    except ValueError:
        raise argparse.ArgumentTypeError('%s must be comma-separated numbers, got %r'
                                         % (name, text)) from None
    if count is not None and len(values) not in (1, count):
        raise argparse.ArgumentTypeError('%s needs 1 or %d values, got %r' % (name, count, text))
    return values


def image_shape(text):
    try:
        shape = tuple(int(v) for v in text.split(','))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) <= 0:
        raise argparse.ArgumentTypeError('--image-shape must be C,H,W, got %r' % text)
    return shape


def normalization_args(shape, rgb_mean, rgb_std):
    """ImageRecordIter mean/std arguments; std must be positive (a zero std
    would divide by zero and calibrate NaN ranges)."""
    channels = shape[0]
    mean = parse_floats(rgb_mean, '--rgb-mean', channels)
    std = parse_floats(rgb_std, '--rgb-std', channels)
    mean = mean * channels if len(mean) == 1 else mean
    std = std * channels if len(std) == 1 else std
    if min(std) <= 0:
        raise ValueError('--rgb-std must be positive, got %s' % rgb_std)
    kwargs = {}
    for c, letter in zip(range(channels), 'rgb'):
        kwargs['mean_' + letter] = mean[c]
        kwargs['std_' + letter] = std[c]
    return kwargs


def record_iter(path, shape, batch_size, rgb_mean, rgb_std, label_name='softmax_label',
                threads=1, shuffle=False, shuffle_chunk_seed=3982304, seed=48564309,
                dtype='float32'):
    if not os.path.isfile(path):
        raise FileNotFoundError('dataset %s not found' % path)
    idx = os.path.splitext(path)[0] + '.idx'
    return mx.io.ImageRecordIter(
        path_imgrec=path, path_imgidx=idx if os.path.isfile(idx) else '', label_width=1,
        preprocess_threads=max(1, threads), batch_size=batch_size, data_shape=shape,
        label_name=label_name, rand_crop=False, rand_mirror=False, shuffle=shuffle,
        shuffle_chunk_seed=shuffle_chunk_seed, seed=seed, dtype=dtype,
        **normalization_args(shape, rgb_mean, rgb_std))


class ProgressIter(mx.io.DataIter):
    """A DataIter that shows a progress bar over at most `num_batches` batches."""

    def __init__(self, data_iter, num_batches, desc, quiet=False):
        super().__init__(data_iter.batch_size)
        self._iter, self._num, self._desc, self._quiet = data_iter, num_batches, desc, quiet
        self._bar, self._done = None, 0

    @property
    def provide_data(self):
        return self._iter.provide_data

    @property
    def provide_label(self):
        return self._iter.provide_label

    def reset(self):
        self._iter.reset()
        self._done = 0
        if self._bar is not None:
            self._bar.close()
        self._bar = tqdm(total=self._num, desc=self._desc, unit='batch', disable=self._quiet,
                         file=sys.stderr)

    def next(self):
        if self._bar is None:
            self.reset()
        if self._done >= self._num:
            self._bar.close()
            raise StopIteration
        batch = self._iter.next()
        self._done += 1
        self._bar.update(1)
        return batch


def setup_logging(quiet):
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO,
                        format='%(asctime)s %(levelname)s %(message)s')
    return logging.getLogger('example')


def write_json(path, payload):
    if path:
        with open(path, 'w') as f:
            json.dump(payload, f, indent=1)
