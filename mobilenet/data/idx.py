"""MNIST-style IDX files (MNIST, Fashion-MNIST, KMNIST, EMNIST), raw or gzip-compressed.

A folder holds ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and
``t10k-labels-idx1-ubyte`` (each optionally ``.gz``; the ``train-images.idx3-ubyte`` spelling works too). The t10k
files are the validation split. An IDX file is a big-endian header: two zero bytes, a type code, the number of
dimensions, then one 32-bit size per dimension, then the values in row-major order.
"""

from __future__ import annotations

import gzip
import math
import re
import struct
import zlib
from pathlib import Path

import numpy as np

from ..errors import MobileNetError
from .sources import ArraySource, ReaderSplits, channel_stats, check_labels

# IDX type code -> numpy big-endian dtype.
IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
# The largest IDX data set, EMNIST ByClass, is about 0.7 GB decompressed.
MAX_BYTES = 2 << 30
_NAME = re.compile(r"(train|t10k)-(images|labels)[.-]idx([13])-ubyte(\.gz)?$")


def _find(root: Path) -> dict[tuple[str, str], Path]:
    found = {}
    for path in root.iterdir():
        m = _NAME.match(path.name)
        if m and path.is_file():
            found[(m.group(1), m.group(2))] = path
    return found


def is_idx_dir(path: Path) -> bool:
    return ("train", "images") in _find(path)


def read_idx_file(path: Path) -> np.ndarray:
    """Parses one IDX file (raw or .gz), checking the magic number, dimensions and size.

    The header is read first and the body only up to the size it declares (at most ``MAX_BYTES``), so a
    decompression bomb or a file far longer than its header says is one error, not a memory spike.

    Raises:
        MobileNetError: if the file is truncated, too long, too large, or not IDX.
    """
    try:
        with (gzip.open(path) if path.suffix == ".gz" else open(path, "rb")) as f:
            magic = f.read(4)
            if len(magic) < 4 or magic[0] != 0 or magic[1] != 0 or magic[2] not in IDX_TYPES or magic[3] == 0:
                raise MobileNetError(f"{path} is not an IDX file (bad magic number {magic.hex() or 'empty'})")
            ndim, dtype = magic[3], np.dtype(IDX_TYPES[magic[2]])
            header = 4 + 4 * ndim
            sizes = f.read(4 * ndim)
            if len(sizes) < 4 * ndim:
                raise MobileNetError(f"{path} is truncated: header needs {header} bytes, file has "
                                     f"{4 + len(sizes)}")
            dims = struct.unpack(f">{ndim}I", sizes)
            expected = header + math.prod(dims) * dtype.itemsize  # exact: an int64 product can wrap around to 0
            if expected > MAX_BYTES:
                raise MobileNetError(f"{path} declares dimensions {dims}: {expected:,} bytes, more than the "
                                     f"{MAX_BYTES:,} this reader accepts")
            body = f.read(expected - header + 1)  # one byte more than declared tells "too long"
    except (OSError, EOFError, zlib.error) as exc:
        raise MobileNetError(f"cannot read {path}: {exc}") from None
    if header + len(body) != expected:
        kind = "truncated" if header + len(body) < expected else "too long"
        got = f"{header + len(body)}" if kind == "truncated" else "more"
        raise MobileNetError(f"{path} is {kind}: dimensions {dims} need {expected} bytes, file has {got}")
    try:  # an empty array may still declare dimensions numpy cannot represent, e.g. (0, 2**30, 2**30, 2**30)
        # astype copies into native byte order, and the copy is writable (torch warns on read-only buffers).
        return np.frombuffer(body, dtype=dtype).reshape(dims).astype(dtype.newbyteorder("="))
    except (ValueError, MemoryError) as exc:
        raise MobileNetError(f"{path}: dimensions {dims} cannot be read ({exc})") from None


def _images(path: Path) -> np.ndarray:
    x = read_idx_file(path)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise MobileNetError(f"{path}: expected images [N, H, W] or [N, H, W, 1|3], got {x.shape}")
    if x.dtype != np.uint8:
        raise MobileNetError(f"{path}: expected unsigned byte pixels (type 0x08), got {x.dtype}")
    return np.ascontiguousarray(x)


def _labels(path: Path, count: int) -> np.ndarray:
    y = read_idx_file(path)
    if y.ndim != 1 or len(y) != count or not np.issubdtype(y.dtype, np.integer):
        raise MobileNetError(f"{path}: expected {count} integer labels, got {y.dtype} {y.shape}")
    return y.astype(np.int64)


def read_idx(root: Path) -> ReaderSplits:
    """Reads an IDX folder; class names are the label values ("0", "1", ...); statistics come from train images.

    Raises:
        MobileNetError: if a file is missing, malformed, or images and labels disagree.
    """
    files = _find(root)
    missing = [f"{s}-{k}" for s in ("train", "t10k") for k in ("images", "labels") if (s, k) not in files]
    if missing:
        raise MobileNetError(f"{root}: missing IDX files {', '.join(missing)} (expected e.g. "
                             "train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-...)")
    splits = {}
    for split in ("train", "t10k"):
        images = _images(files[(split, "images")])
        splits[split] = (images, _labels(files[(split, "labels")], len(images)))
    if splits["train"][0].shape[1:] != splits["t10k"][0].shape[1:]:
        raise MobileNetError(f"{root}: train and t10k images differ in shape")
    num_classes = int(max(splits["train"][1].max(initial=0), splits["t10k"][1].max(initial=0))) + 1
    for split, (_, labels) in splits.items():
        check_labels(labels, num_classes, f"{files[(split, 'labels')]}")
    mean, std = channel_stats(splits["train"][0])
    return ReaderSplits(ArraySource(*splits["train"]), ArraySource(*splits["t10k"]), None,
                        [str(i) for i in range(num_classes)], mean, std)
