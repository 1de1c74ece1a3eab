"""Image folders: one sub-folder per class (a seeded share held out for validation), or the ImageNet layout.

The ImageNet layout is ``root/train/<class>/*`` and ``root/val/<class>/*`` (and optionally ``root/test/<class>/*``);
class names are the sorted sub-folder names of ``train/``. Every file is opened when the folder is read, so a
corrupt or unreadable image is reported with its path and left out before training starts.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import MobileNetError
from .sources import FileSource, ReaderSplits
from .transforms import IMAGENET_MEAN, IMAGENET_STD

log = logging.getLogger("mobilenet.data")

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}


def _class_dirs(root: Path) -> list[Path]:
    return sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)


def _check(path: Path) -> str | None:
    """Why ``path`` cannot be used as an image, or ``None`` if it decodes."""
    try:
        with Image.open(path) as img:
            if img.format == "JPEG":
                img.draft(img.mode, (1, 1))  # 1/8-scale decode: still reads every coefficient, 5-10x faster
            img.load()  # a full decode: catches truncated files that a header check would pass
    except Exception as exc:  # PIL raises many types for damaged files; all mean "skip this file"
        return f"{type(exc).__name__}: {exc}"
    return None


def _scan(root: Path, class_names: list[str], skipped: list[tuple[str, str]]) -> tuple[list[Path], list[int]]:
    found = []
    for label, name in enumerate(class_names):
        folder = root / name
        if folder.is_dir():
            found += [(path, label) for path in sorted(folder.rglob("*"))
                      if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()]
    # Decoding releases the GIL, so threads check files in parallel; map keeps the order.
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        reasons = list(pool.map(_check, [path for path, _ in found], chunksize=64))
    paths, labels = [], []
    for (path, label), reason in zip(found, reasons):
        if reason is not None:
            log.warning("skipping unreadable image %s (%s)", path, reason)
            skipped.append((str(path), reason))
            continue
        paths.append(path)
        labels.append(label)
    return paths, labels


def is_imagenet_layout(root: Path) -> bool:
    return (root / "train").is_dir() and (root / "val").is_dir()


def read_image_folder(root: Path, seed: int = 0, val_fraction: float = 0.1) -> ReaderSplits:
    """Reads an image folder (see the module docstring), normalised with ImageNet statistics.

    Raises:
        MobileNetError: if there are no class folders or no readable images.
    """
    skipped: list[tuple[str, str]] = []
    if is_imagenet_layout(root):
        class_names = [p.name for p in _class_dirs(root / "train")]
        if not class_names:
            raise MobileNetError(f"{root}/train has no class sub-folders")
        train = FileSource(*_scan(root / "train", class_names, skipped))
        val_dir = root / "val"
        extra = sorted({p.name for p in _class_dirs(val_dir)} - set(class_names))
        if extra:
            raise MobileNetError(f"{val_dir} has class folders missing from train/: {', '.join(extra[:5])}")
        val = FileSource(*_scan(val_dir, class_names, skipped))
        test = FileSource(*_scan(root / "test", class_names, skipped)) if (root / "test").is_dir() else None
    else:
        class_names = [p.name for p in _class_dirs(root)]
        if not class_names:
            raise MobileNetError(f"{root} has no class sub-folders")
        paths, labels = _scan(root, class_names, skipped)
        train, val = _hold_out(paths, labels, seed, val_fraction)
        test = None
    if len(train) == 0:
        raise MobileNetError(f"no readable images in {root} (looked for {', '.join(sorted(IMAGE_SUFFIXES))} files "
                             f"in {len(class_names)} class folders; {len(skipped)} unreadable)")
    return ReaderSplits(train, val, test, class_names, IMAGENET_MEAN, IMAGENET_STD, skipped)


def _hold_out(paths, labels, seed, val_fraction) -> tuple[FileSource, FileSource]:
    """Per class, a seeded ``val_fraction`` (at least one image when the class has two or more) for validation."""
    rng = np.random.default_rng(seed)
    labels_arr = np.asarray(labels)
    is_val = np.zeros(len(paths), dtype=bool)
    for label in np.unique(labels_arr):
        members = np.flatnonzero(labels_arr == label)
        n_val = 0 if len(members) < 2 else max(1, round(val_fraction * len(members)))
        is_val[rng.permutation(members)[:n_val]] = True

    def pick(mask):
        return [paths[i] for i in np.flatnonzero(mask)], [labels[i] for i in np.flatnonzero(mask)]

    return FileSource(*pick(~is_val)), FileSource(*pick(is_val))
