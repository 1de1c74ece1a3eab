"""``load_data``: one entry point for the embedded dataset and every on-disk format, returning a ``DataBundle``."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import MobileNetError
from . import patterns, shapes
from .transforms import AUGMENTATIONS, EvalTransform, build_transform, channel_stats_for

log = logging.getLogger("mobilenet.data")


def _sizes(splits: dict) -> str:
    return "/".join(str(size) for size, _ in splits.values())


# name -> (dataset class, per-channel mean, std, description); the first is the default.
EMBEDDED = {
    "patterns": (patterns.PatternsDataset, patterns.PATTERNS_MEAN, patterns.PATTERNS_STD,
                 f"{len(patterns.CLASS_NAMES)} textured-object classes, shape x texture (train/val/test: "
                 f"{_sizes(patterns.SPLITS)}), any resolution"),
    "shapes": (shapes.ShapesDataset, shapes.SHAPES_MEAN, shapes.SHAPES_STD,
               f"{len(shapes.CLASS_NAMES)} shape-outline classes (train/val/test: {_sizes(shapes.SPLITS)}), any "
               "resolution"),
}
EMBEDDED_DATASETS = {name: entry[3] for name, entry in EMBEDDED.items()}
DEFAULT_DATA = next(iter(EMBEDDED))
DATA_FORMATS = ("embedded", "imagefolder", "cifar", "idx")


@dataclass
class DataBundle:
    """A dataset ready for training and evaluation.

    Attributes:
        train, val: map-style datasets yielding ``(float tensor [in_chans, R, R], int label)``; ``train`` applies
            the chosen augmentation, ``val`` the evaluation transform (shorter side to R, centre crop).
        test: a third split with the evaluation transform, or ``None`` when the format has none.
        class_names: label ``i`` is ``class_names[i]``.
        mean, std: per-channel normalisation statistics (in [0, 1] units) the tensors were normalised with.
        in_chans: channels of every tensor (3 or 1).
        name: the embedded dataset's name or the data path.
        format: "embedded", "imagefolder", "cifar" or "idx".
        resolution: the side R of every tensor.
        skipped: ``(path, reason)`` for each unreadable file that was left out.
    """

    train: torch.utils.data.Dataset
    val: torch.utils.data.Dataset
    test: torch.utils.data.Dataset | None
    class_names: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    in_chans: int
    name: str
    format: str
    resolution: int
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def detect_format(spec: str) -> str:
    """The format of ``spec``: an embedded dataset name, or what the folder at that path holds.

    Raises:
        MobileNetError: if ``spec`` is neither an embedded name nor a folder in a recognised layout.
    """
    if spec in EMBEDDED_DATASETS:
        return "embedded"
    path = Path(spec).expanduser()
    if not path.exists():
        raise MobileNetError(f"no dataset {spec!r}: not an embedded dataset ({', '.join(EMBEDDED_DATASETS)}) and "
                             "no such path")
    if not path.is_dir():
        raise MobileNetError(f"dataset path {spec!r} is a file; expected a folder (image folder, CIFAR batches or "
                             "MNIST IDX files)")
    from .cifar import is_cifar_dir
    from .idx import is_idx_dir
    if is_cifar_dir(path):
        return "cifar"
    if is_idx_dir(path):
        return "idx"
    if any(p.is_dir() for p in path.iterdir()):
        return "imagefolder"
    raise MobileNetError(f"cannot tell the format of {spec!r}: expected class sub-folders (or train/ and val/), "
                         "CIFAR python batches (data_batch_1.. or train/test/meta) or MNIST IDX files")


def load_data(spec: str = DEFAULT_DATA, data_format: str | None = None, resolution: int = 64, in_chans: int = 3,
              seed: int = 0, val_fraction: float = 0.1, augment: str = "standard",
              limit: int | None = None) -> DataBundle:
    """Loads a dataset for training at ``resolution``.

    Args:
        spec: an embedded dataset name (``"shapes"``) or a path: an image folder with one sub-folder per class,
            the ImageNet layout (``train/`` and ``val/``, class sub-folders in each), a CIFAR-10/100 python batch
            folder (``cifar-10-batches-py`` / ``cifar-100-python``) or a folder of MNIST-style IDX files.
        data_format: ``None`` to detect, or one of "embedded", "imagefolder", "cifar", "idx".
        resolution: side R of every image tensor.
        in_chans: 3 (grayscale repeated to RGB) or 1 (RGB reduced to luma).
        seed: seed of the validation hold-out for a plain class folder, and of the ``limit`` subsets of on-disk
            data. It does not change the embedded dataset, whose splits are fixed.
        val_fraction: share of each class held out for validation when a class folder has no ``val/``.
        augment: training augmentation: "standard" (random-resized crop + flip), "light" (milder crops + flip)
            or "none".
        limit: if given, at most this many training and this many validation (and test) samples.

    Raises:
        MobileNetError: for an unknown name or format, a malformed or empty dataset, or bad arguments.
    """
    if augment not in AUGMENTATIONS:
        raise MobileNetError(f"unknown augmentation {augment!r}; expected one of {', '.join(AUGMENTATIONS)}")
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
        raise MobileNetError(f"resolution must be an integer >= 1, got {resolution!r}")
    if in_chans not in (1, 3):
        raise MobileNetError(f"in_chans must be 1 or 3, got {in_chans!r}")
    if not 0 < val_fraction < 1:
        raise MobileNetError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise MobileNetError(f"limit must be an integer >= 1, got {limit!r}")
    spec = str(spec)
    fmt = detect_format(spec) if data_format is None else data_format
    if fmt not in DATA_FORMATS:
        raise MobileNetError(f"unknown data format {fmt!r}; expected one of {', '.join(DATA_FORMATS)}")
    if fmt == "embedded":
        return _load_embedded(spec, resolution, in_chans, augment, limit)
    path = Path(spec).expanduser()
    if not path.is_dir():
        raise MobileNetError(f"dataset folder {spec!r} does not exist")
    if fmt == "imagefolder":
        from .folder import read_image_folder
        splits = read_image_folder(path, seed=seed, val_fraction=val_fraction)
    elif fmt == "cifar":
        from .cifar import read_cifar
        splits = read_cifar(path)
    else:
        from .idx import read_idx
        splits = read_idx(path)
    return _bundle(splits, spec, fmt, resolution, in_chans, augment, limit, seed)


def _load_embedded(name, resolution, in_chans, augment, limit) -> DataBundle:
    if name not in EMBEDDED_DATASETS:
        raise MobileNetError(f"unknown embedded dataset {name!r}; available: {', '.join(EMBEDDED_DATASETS)}")
    dataset, mean, std, _ = EMBEDDED[name]
    mean, std = channel_stats_for(in_chans, mean, std)
    evaluate = EvalTransform(resolution, mean, std, in_chans)
    splits = {split: dataset(split, resolution, transform=evaluate, size=limit) for split in ("val", "test")}
    train = dataset("train", resolution, transform=build_transform(augment, resolution, mean, std, in_chans),
                    size=limit)
    return DataBundle(train, splits["val"], splits["test"], list(dataset.class_names), tuple(mean), tuple(std),
                      in_chans, name, "embedded", resolution)


def _bundle(splits, spec, fmt, resolution, in_chans, augment, limit, seed) -> DataBundle:
    """Wraps reader output (see ``ReaderSplits``) into transformed datasets."""
    mean, std = channel_stats_for(in_chans, splits.mean, splits.std)
    evaluate = EvalTransform(resolution, mean, std, in_chans)
    train = splits.train.with_transform(build_transform(augment, resolution, mean, std, in_chans), limit, seed)
    val = splits.val.with_transform(evaluate, limit, seed)
    test = None if splits.test is None else splits.test.with_transform(evaluate, limit, seed)
    for part, name in ((train, "training"), (val, "validation")):
        if len(part) == 0:
            raise MobileNetError(f"{spec}: the {name} split is empty")
    if splits.skipped:
        log.warning("skipped %d unreadable file(s) in %s", len(splits.skipped), spec)
    return DataBundle(train, val, test, list(splits.class_names), tuple(mean), tuple(std), in_chans, spec, fmt,
                      resolution, list(splits.skipped))
