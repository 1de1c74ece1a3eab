"""What the on-disk readers return: decoded arrays or file lists per split, turned into datasets by ``load_data``."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import MobileNetError
from .transforms import open_image

log = logging.getLogger("mobilenet.data")


def _subset(n: int, limit: int | None, seed: int) -> np.ndarray:
    """All indices, or a seeded random ``limit`` of them in ascending order (so classes stay mixed)."""
    if limit is None or limit >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng([seed, n]).permutation(n)[:limit])


class ArraySource:
    """Images held in memory as ``uint8 [N, H, W, C]`` with integer labels (CIFAR, MNIST)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.images, self.labels = images, np.asarray(labels, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.labels)

    def with_transform(self, transform, limit: int | None = None, seed: int = 0) -> ArrayDataset:
        return ArrayDataset(self, transform, _subset(len(self), limit, seed))


class ArrayDataset(torch.utils.data.Dataset):
    """A view of an ``ArraySource`` through a transform (``None``: uint8 ``[C, H, W]`` tensors)."""

    def __init__(self, source: ArraySource, transform, indices: np.ndarray):
        self.source, self.transform, self.indices = source, transform, indices
        self.labels = source.labels[indices].tolist()

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int):
        image = torch.from_numpy(self.source.images[self.indices[index]]).permute(2, 0, 1)
        return (image if self.transform is None else self.transform(image)), self.labels[index]


class FileSource:
    """Image files with integer labels, decoded on access (image folders)."""

    def __init__(self, paths: list[Path], labels: list[int]):
        self.paths, self.labels = list(paths), list(labels)

    def __len__(self) -> int:
        return len(self.paths)

    def with_transform(self, transform, limit: int | None = None, seed: int = 0) -> FileDataset:
        keep = _subset(len(self), limit, seed)
        return FileDataset([self.paths[i] for i in keep], [self.labels[i] for i in keep], transform)


class FileDataset(torch.utils.data.Dataset):
    """Decodes ``paths[i]`` and applies the transform.

    Files are checked when the folder is read, so a decode failure here is rare (a file damaged after the scan):
    it is reported with its path and the next file is used instead, so one bad file never stops an epoch.
    """

    def __init__(self, paths: list[Path], labels: list[int], transform):
        self.paths, self.labels, self.transform = paths, labels, transform
        self.draft = getattr(transform, "draft_size", lambda: None)()

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        for attempt in range(len(self.paths)):
            i = (index + attempt) % len(self.paths)
            try:
                image = open_image(self.paths[i], draft=self.draft)
            except MobileNetError as exc:
                log.warning("skipping unreadable image: %s", exc)
                continue
            return (image if self.transform is None else self.transform(image)), self.labels[i]
        raise MobileNetError("no readable image left in the dataset")


@dataclass
class ReaderSplits:
    """A reader's output: splits as sources (``test`` may be ``None``), class names, normalisation statistics."""

    train: ArraySource | FileSource
    val: ArraySource | FileSource
    test: ArraySource | FileSource | None
    class_names: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    skipped: list[tuple[str, str]] = field(default_factory=list)


def channel_stats(images: np.ndarray, sample: int = 10000) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std (in [0, 1] units) of ``uint8 [N, H, W, C]`` images, over up to ``sample`` of them."""
    if len(images) == 0:
        raise MobileNetError("no images to compute normalisation statistics from")
    step = max(1, len(images) // sample)
    x = images[::step].reshape(-1, images.shape[-1]).astype(np.float64) / 255.0
    std = np.maximum(x.std(0), 1e-3)  # a constant channel would divide by zero
    return tuple(float(m) for m in x.mean(0)), tuple(float(s) for s in std)


def check_labels(labels: np.ndarray, num_classes: int, where: str) -> None:
    """Every label must index a class name."""
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise MobileNetError(f"{where}: labels must be in [0, {num_classes}), found {labels.min()}..{labels.max()}")
