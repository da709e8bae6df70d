#!/usr/bin/env python3
"""Pack Fashion-MNIST (idx gz files) into MXNet RecordIO files.

Source data: Debian's ``dataset-fashion-mnist`` package, which installs
``/usr/share/datasets/fashion-mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz``
(60,000 training / 10,000 test images, 28x28 grey uint8, labels 0..9).
Install it with ``apt-get install dataset-fashion-mnist``.

Outputs (in ``--out-dir``, default ``data/fashion_mnist``):

* ``train.rec`` / ``train.idx`` -- the full 60k training set, in file order;
* ``calib.rec`` / ``calib.idx`` -- ``--num-calib`` (default 5000) images drawn
  from the TRAINING set as a fixed random subset (``numpy.random.RandomState(seed)``
  permutation, first ``num_calib`` indices, kept in ascending index order);
  ``calib_indices.txt`` lists the chosen training-set indices;
* ``val.rec`` / ``val.idx`` -- the full 10k test set, in file order.

Each record is ``mx.recordio.pack_img`` of one 28x28 uint8 image, encoded as
LOSSLESS PNG (single channel), with the class label as a float in the IRHeader
and the record id equal to its position in the output file.

Reading back: an iterator with no mean/std and no augmentation, e.g.::

    it = mx.io.ImageRecordIter(path_imgrec='data/fashion_mnist/val.rec',
                               path_imgidx='data/fashion_mnist/val.idx',
                               data_shape=(1, 28, 28), batch_size=100,
                               shuffle=False, mean_r=0, std_r=1,
                               preprocess_threads=1)

returns batches of float32 of shape (batch, 1, 28, 28) holding exactly the
original pixel values 0..255 (the iterator decodes the PNG as grey because
``data_shape[0] == 1``) and float32 labels, in file order when
``shuffle=False``. This was verified against the idx arrays for all three files
(``--verify`` re-runs that check; ``round_batch`` pads the last batch when the
size is not a multiple of ``batch_size``, check ``batch.pad``).

The reader functions (``read_idx``, ``read_idx_images``, ``read_idx_labels``,
``load_fashion_mnist``) and the writer (``write_rec``) are importable, e.g. by
tests that put ``python/`` on ``sys.path``.
"""
import argparse
import gzip
import logging
import os
import struct
import sys

import numpy as np

LOG = logging.getLogger("pack_fashion_mnist")

DEFAULT_DATA_DIR = "/usr/share/datasets/fashion-mnist"
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
IMAGE_MAGIC = 2051  # 0x00000803: unsigned byte, 3 dimensions
LABEL_MAGIC = 2049  # 0x00000801: unsigned byte, 1 dimension
NUM_CLASSES = 10
INSTALL_HINT = ("Fashion-MNIST idx files not found: %s. Install them with "
                "`apt-get install dataset-fashion-mnist` (files go to "
                + DEFAULT_DATA_DIR + ") or pass --data-dir.")


def _open(path):
    if not os.path.isfile(path):
        raise FileNotFoundError(INSTALL_HINT % path)
    return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")


def read_idx(path, expected_magic):
    """Read an idx file (optionally gzipped) of unsigned bytes.

    Returns a uint8 array whose shape is given by the file header. Raises
    ``FileNotFoundError`` (with an install hint) for a missing file and
    ``ValueError`` for a wrong magic number or a size mismatch.
    """
    with _open(path) as f:
        raw = f.read()
    if len(raw) < 4:
        raise ValueError("%s: too short for an idx header" % path)
    magic = struct.unpack(">I", raw[:4])[0]
    if magic != expected_magic:
        raise ValueError("%s: bad magic number %d (0x%08x), expected %d (0x%08x)"
                         % (path, magic, magic, expected_magic, expected_magic))
    ndim = magic & 0xFF
    if (magic >> 8) != 0x08:
        raise ValueError("%s: element type 0x%02x is not unsigned byte"
                         % (path, (magic >> 8) & 0xFF))
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise ValueError("%s: truncated header" % path)
    shape = struct.unpack(">" + "I" * ndim, raw[4:header_len])
    expected = int(np.prod(shape, dtype=np.int64))
    if len(raw) - header_len != expected:
        raise ValueError("%s: header says %s (%d bytes of data), file has %d"
                         % (path, shape, expected, len(raw) - header_len))
    return np.frombuffer(raw, dtype=np.uint8, offset=header_len).reshape(shape).copy()


def read_idx_images(path):
    """Read an idx3 image file -> uint8 array (N, rows, cols)."""
    images = read_idx(path, IMAGE_MAGIC)
    if images.ndim != 3:
        raise ValueError("%s: expected 3 dimensions, got %s" % (path, images.shape))
    return images


def read_idx_labels(path):
    """Read an idx1 label file -> uint8 array (N,), values checked to be < 10."""
    labels = read_idx(path, LABEL_MAGIC)
    if labels.ndim != 1:
        raise ValueError("%s: expected 1 dimension, got %s" % (path, labels.shape))
    if labels.size and labels.max() >= NUM_CLASSES:
        raise ValueError("%s: label %d out of range 0..%d"
                         % (path, labels.max(), NUM_CLASSES - 1))
    return labels


def load_fashion_mnist(data_dir=DEFAULT_DATA_DIR, split="train"):
    """Return (images uint8 (N,28,28), labels uint8 (N,)) for split 'train' or 'test'."""
    if split not in FILES:
        raise ValueError("split must be one of %s" % sorted(FILES))
    img_name, lbl_name = FILES[split]
    images = read_idx_images(os.path.join(data_dir, img_name))
    labels = read_idx_labels(os.path.join(data_dir, lbl_name))
    if images.shape[0] != labels.shape[0]:
        raise ValueError("%s split: %d images but %d labels"
                         % (split, images.shape[0], labels.shape[0]))
    if images.shape[1:] != (28, 28):
        raise ValueError("%s split: images are %s, expected 28x28"
                         % (split, images.shape[1:]))
    return images, labels


def calib_indices(num_train, num_calib, seed):
    """Fixed seeded subset of range(num_train), sorted ascending."""
    if not 0 < num_calib <= num_train:
        raise ValueError("num_calib must be in 1..%d, got %d" % (num_train, num_calib))
    perm = np.random.RandomState(seed).permutation(num_train)
    return np.sort(perm[:num_calib])


def write_rec(prefix, images, labels, png_compression=3):
    """Write ``prefix.rec`` / ``prefix.idx`` with one lossless PNG record per image.

    images: uint8 (N, H, W) grey or (N, H, W, 3) colour (OpenCV's BGR order);
    labels: integer (N,). Record i has id i and label float(labels[i]).
    Returns the number of records written.
    """
    import mxnet as mx
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.dtype != np.uint8 or not (images.ndim == 3 or
                                        (images.ndim == 4 and images.shape[3] == 3)):
        raise ValueError("images must be uint8 (N, H, W) or (N, H, W, 3), got %s %s"
                         % (images.dtype, images.shape))
    if labels.shape != (images.shape[0],):
        raise ValueError("labels shape %s does not match %d images"
                         % (labels.shape, images.shape[0]))
    out_dir = os.path.dirname(prefix)
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
    rec = mx.recordio.MXIndexedRecordIO(prefix + ".idx", prefix + ".rec", "w")
    try:
        for i in range(images.shape[0]):
            header = mx.recordio.IRHeader(0, float(labels[i]), i, 0)
            rec.write_idx(i, mx.recordio.pack_img(
                header, np.ascontiguousarray(images[i]),
                quality=png_compression, img_fmt=".png"))
    finally:
        rec.close()
    return images.shape[0]


def read_rec_iter(prefix, num, batch_size=500, height=28, width=28):
    """Read a packed file back through mx.io.ImageRecordIter (no mean/std, no
    augmentation, no shuffle). Returns (float32 (num,1,H,W), float32 (num,))."""
    import mxnet as mx
    it = mx.io.ImageRecordIter(path_imgrec=prefix + ".rec", path_imgidx=prefix + ".idx",
                               data_shape=(1, height, width), batch_size=batch_size,
                               shuffle=False, mean_r=0, std_r=1, preprocess_threads=1,
                               round_batch=True)
    data, label = [], []
    for batch in it:
        n = batch_size - batch.pad
        data.append(batch.data[0].asnumpy()[:n])
        label.append(batch.label[0].asnumpy()[:n])
    data = np.concatenate(data)[:num]
    label = np.concatenate(label)[:num]
    return data, label


def verify_rec(prefix, images, labels):
    """Check that ImageRecordIter returns exactly ``images``/``labels`` in order."""
    data, label = read_rec_iter(prefix, images.shape[0])
    if data.dtype != np.float32 or data.shape != (images.shape[0], 1) + images.shape[1:]:
        raise AssertionError("%s: got %s %s" % (prefix, data.dtype, data.shape))
    if not np.array_equal(data[:, 0], images.astype(np.float32)):
        bad = np.flatnonzero((data[:, 0] != images).reshape(len(images), -1).any(1))
        raise AssertionError("%s: pixel mismatch in %d records (first %s)"
                             % (prefix, bad.size, bad[:5]))
    if not np.array_equal(label, labels.astype(np.float32)):
        raise AssertionError("%s: label mismatch" % prefix)
    LOG.info("verified %s.rec: %d images, pixels and labels exact", prefix, len(images))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=DEFAULT_DATA_DIR,
                        help="folder with the *-ubyte.gz idx files (default: %(default)s)")
    parser.add_argument("--out-dir", default="data/fashion_mnist",
                        help="output folder (default: %(default)s)")
    parser.add_argument("--num-calib", type=int, default=5000,
                        help="calibration images taken from the training set "
                             "(default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the calibration subset (default: %(default)s)")
    parser.add_argument("--png-compression", type=int, default=3, choices=range(0, 10),
                        help="PNG compression level 0-9 (lossless at any level)")
    parser.add_argument("--verify", action="store_true",
                        help="read every file back with ImageRecordIter and compare")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    try:
        train_x, train_y = load_fashion_mnist(args.data_dir, "train")
        test_x, test_y = load_fashion_mnist(args.data_dir, "test")
    except FileNotFoundError as e:
        LOG.error("%s", e)
        return 2
    LOG.info("train %s, test %s", train_x.shape, test_x.shape)
    calib = calib_indices(len(train_x), args.num_calib, args.seed)
    os.makedirs(args.out_dir, exist_ok=True)
    np.savetxt(os.path.join(args.out_dir, "calib_indices.txt"), calib, fmt="%d")

    splits = [("train", train_x, train_y), ("calib", train_x[calib], train_y[calib]),
              ("val", test_x, test_y)]
    for name, x, y in splits:
        prefix = os.path.join(args.out_dir, name)
        n = write_rec(prefix, x, y, args.png_compression)
        LOG.info("wrote %s.rec/.idx: %d records (%.1f MB)", prefix, n,
                 os.path.getsize(prefix + ".rec") / 1e6)
        if args.verify:
            verify_rec(prefix, x, y)
    return 0


if __name__ == "__main__":
    sys.exit(main())
