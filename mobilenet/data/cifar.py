"""CIFAR-10 and CIFAR-100 as their authors distribute them: python pickles, read with a restricted unpickler.

``cifar-10-batches-py`` holds ``data_batch_1`` .. ``data_batch_5``, ``test_batch`` and ``batches.meta``;
``cifar-100-python`` holds ``train``, ``test`` and ``meta``. Each batch is a dict with ``b"data"`` (uint8
``[N, 3072]``: 1024 red, then green, then blue values, rows of 32) and ``b"labels"`` (CIFAR-10) or
``b"fine_labels"`` (CIFAR-100). The test batch is the validation split.

A pickle can run any function while loading, so these files go through ``_SafeUnpickler``: it resolves only the
numpy array reconstruction the files need (plain containers, strings, bytes and numbers need no lookup) and
refuses every other global with a ``MobileNetError`` before anything is called.
"""

from __future__ import annotations

import codecs
import pickle
from pathlib import Path

import numpy as np

from ..errors import MobileNetError
from .sources import ArraySource, ReaderSplits, channel_stats, check_labels

CIFAR10_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]


def _latin1_encode(text, encoding="latin1", errors="strict"):
    # Python 3 pickles bytes at protocols < 3 as _codecs.encode(str, "latin1"); only that exact use is admitted.
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("refused _codecs.encode call")
    return codecs.encode(text, "latin1", errors)


def _numpy_globals() -> dict[tuple[str, str], object]:
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy < 2
        from numpy.core import multiarray, numeric
    allowed = {"_reconstruct": multiarray._reconstruct, "scalar": multiarray.scalar}
    table = {}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        table.update({(module, name): fn for name, fn in allowed.items()})
    for module in ("numpy.core.numeric", "numpy._core.numeric"):
        table[(module, "_frombuffer")] = numeric._frombuffer
    table[("numpy", "ndarray")] = np.ndarray
    table[("numpy", "dtype")] = np.dtype
    table[("_codecs", "encode")] = _latin1_encode
    return table


class _SafeUnpickler(pickle.Unpickler):
    _allowed = _numpy_globals()

    def find_class(self, module, name):
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refused global {module}.{name}") from None


def safe_unpickle(path: Path):
    """Loads a CIFAR-style pickle, admitting only containers, str/bytes, numbers and numpy arrays.

    Raises:
        MobileNetError: if the file is missing, truncated, or asks for anything else.
    """
    try:
        with open(path, "rb") as f:
            return _SafeUnpickler(f, encoding="bytes").load()
    except FileNotFoundError:
        raise MobileNetError(f"missing CIFAR file {path}") from None
    except (pickle.UnpicklingError, EOFError, AttributeError, ValueError, TypeError, IndexError, KeyError,
            OverflowError, MemoryError, OSError) as exc:
        raise MobileNetError(f"{path} is not a valid CIFAR python pickle ({type(exc).__name__}: {exc})") from None


def is_cifar_dir(path: Path) -> bool:
    return (path / "batches.meta").is_file() or all((path / n).is_file() for n in ("train", "test", "meta"))


def _names(meta: dict, key: bytes, path: Path) -> list[str]:
    names = meta.get(key) if isinstance(meta, dict) else None
    if not isinstance(names, list) or not names:
        raise MobileNetError(f"{path} has no {key.decode()} list")
    return [n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n) for n in names]


def _batch(path: Path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    batch = safe_unpickle(path)
    if not isinstance(batch, dict) or b"data" not in batch or label_key not in batch:
        raise MobileNetError(f"{path} is not a CIFAR batch: expected a dict with b'data' and {label_key!r}")
    try:  # a ragged or nested list of labels makes numpy raise, not a label array
        data, labels = batch[b"data"], np.asarray(batch[label_key])
    except (ValueError, TypeError, OverflowError) as e:
        raise MobileNetError(f"{path}: {label_key!r} is not a list of integer labels ({e})") from None
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise MobileNetError(f"{path}: b'data' must be a uint8 array [N, 3072], got "
                             f"{getattr(data, 'dtype', type(data).__name__)} {getattr(data, 'shape', '')}")
    if labels.ndim != 1 or len(labels) != len(data) or not np.issubdtype(labels.dtype, np.integer):
        raise MobileNetError(f"{path}: expected {len(data)} integer labels, got {labels.shape} {labels.dtype}")
    # Channel-major rows of 32 -> [N, 32, 32, 3].
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels.astype(np.int64)


def read_cifar(root: Path) -> ReaderSplits:
    """Reads a CIFAR-10 or CIFAR-100 python batch folder; statistics are measured on its training images.

    Raises:
        MobileNetError: if a file is missing, malformed or refused by the restricted unpickler.
    """
    if (root / "batches.meta").is_file():
        class_names = _names(safe_unpickle(root / "batches.meta"), b"label_names", root / "batches.meta")
        present = [n for n in CIFAR10_TRAIN if (root / n).is_file()]
        if not present:
            raise MobileNetError(f"{root}: no data_batch_1 .. data_batch_5 files")
        parts = [_batch(root / n, b"labels") for n in present]
        train = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
        test = _batch(root / "test_batch", b"labels")
    elif is_cifar_dir(root):
        class_names = _names(safe_unpickle(root / "meta"), b"fine_label_names", root / "meta")
        train, test = _batch(root / "train", b"fine_labels"), _batch(root / "test", b"fine_labels")
    else:
        raise MobileNetError(f"{root} is not a CIFAR folder: expected batches.meta + data_batch_N + test_batch "
                             "(CIFAR-10) or meta + train + test (CIFAR-100)")
    for (_, labels), name in ((train, "training"), (test, "test")):
        check_labels(labels, len(class_names), f"{root} {name} batch")
    mean, std = channel_stats(train[0])
    return ReaderSplits(ArraySource(*train), ArraySource(*test), None, class_names, mean, std)
