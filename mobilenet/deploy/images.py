"""Images to check exports and calibrate int8 models with, when the user gives none.

Parity is checked on natural images, not noise: activations then have the ranges a deployed model sees, which is
where float differences between two runtimes show. The sources: the scikit-image sample photos (if installed) for
half of the images, the embedded procedural dataset (``mobilenet.data``, its test split) for the rest, and
deterministic synthetic scenes (smooth gradients with a few bright discs) only if neither is available.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..data.transforms import channel_stats_for, match_channels
from ..normalization import IMAGENET_MEAN, IMAGENET_STD

_SKIMAGE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field")


def normalize(images: torch.Tensor, mean, std) -> torch.Tensor:
    """``(x − mean) / std`` per channel on a (B, C, H, W) batch in [0, 1], with the statistics the data
    transforms use for that many channels (RGB statistics reduced to luma for one channel)."""
    mean, std = channel_stats_for(images.shape[1], mean, std)
    shape = (1, images.shape[1], 1, 1)
    return (images - torch.tensor(mean).view(shape).to(images)) / torch.tensor(std).view(shape).to(images)


def sample_images(n: int, resolution: int, in_chans: int = 3, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                  seed: int = 0) -> tuple[torch.Tensor, str]:
    """``n`` normalised (n, in_chans, resolution, resolution) float32 images and a word naming their source.

    Args:
        n: number of images.
        resolution: side in pixels.
        in_chans: 3 for RGB, or 1 (BT.601 luma, as training and evaluation convert).
        mean, std: the model's normalisation (per channel).
        seed: chooses crops and synthetic scenes deterministically.
    """
    # Half natural photos where available, the rest the embedded dataset: both kinds of input a user deploys on.
    parts, names = [], []
    for source, share in ((_skimage, (n + 1) // 2), (_embedded, n), (_synthetic, n)):
        want = min(share, n - sum(len(p) for p in parts))
        images = source(want, resolution, seed) if want > 0 else None
        if images is not None and len(images):
            parts.append(images[:want])
            names.append(source.__name__.strip("_"))
    return prepare(torch.cat(parts), in_chans, mean, std), "+".join(names)


def prepare(images: torch.Tensor, in_chans: int, mean, std) -> torch.Tensor:
    """A (B, 3, H, W) batch in [0, 1] -> the model's input: channels converted and normalised exactly as the
    data transforms do for training, evaluation and prediction."""
    return normalize(match_channels(images, in_chans), mean, std)


def _embedded(n: int, resolution: int, seed: int) -> torch.Tensor | None:
    try:
        from ..data.load import DEFAULT_DATA, EMBEDDED
    except ImportError:
        return None
    # The test split: images a model trained on the embedded data has not been tuned on.
    test = EMBEDDED[DEFAULT_DATA][0]("test", resolution)
    start = (seed * 97) % max(1, len(test) - n)
    return torch.stack([test.image(start + i) for i in range(min(n, len(test)))]).float() / 255.0


def _skimage(n: int, resolution: int, seed: int) -> torch.Tensor | None:
    try:
        from skimage import data
    except ImportError:
        return None
    photos = []
    for name in _SKIMAGE_PHOTOS:
        try:
            photos.append(torch.from_numpy(np.ascontiguousarray(getattr(data, name)())).permute(2, 0, 1).float())
        except Exception:  # a photo missing from this scikit-image version or needing a download
            continue
    if not photos:
        return None
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        photo = photos[i % len(photos)]
        side = min(photo.shape[1:])
        crop = int(side * (0.5 + 0.5 * torch.rand((), generator=gen).item()))
        top = int(torch.randint(0, photo.shape[1] - crop + 1, (), generator=gen))
        left = int(torch.randint(0, photo.shape[2] - crop + 1, (), generator=gen))
        patch = photo[None, :, top:top + crop, left:left + crop] / 255.0
        out.append(F.interpolate(patch, size=(resolution, resolution), mode="bilinear", antialias=True,
                                 align_corners=False))
    return torch.cat(out).clamp_(0, 1)


def _synthetic(n: int, resolution: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.linspace(0, 1, resolution), torch.linspace(0, 1, resolution), indexing="ij")
    out = torch.empty(n, 3, resolution, resolution)
    for i in range(n):
        a = torch.rand(3, 3, generator=gen)
        out[i] = a[:, 0, None, None] * xs + a[:, 1, None, None] * ys + 0.3 * a[:, 2, None, None]
        for _ in range(3):
            cy, cx, r = torch.rand(3, generator=gen).tolist()
            mask = (ys - cy) ** 2 + (xs - cx) ** 2 < (0.05 + 0.2 * r) ** 2
            out[i][:, mask] = torch.rand(3, 1, generator=gen)
    return out.clamp_(0, 1)
