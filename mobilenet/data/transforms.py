"""Image transforms without torchvision: centre crop for evaluation, random-resized crop + flip for training.

Every transform takes a PIL image or a ``uint8`` tensor ``[C, H, W]`` and returns a normalised ``float32`` tensor
``[in_chans, R, R]``. Cropping happens in source pixels first and a single antialiased bilinear resize follows, so a
crop is never resampled twice. Randomness comes from torch's generator (the global one unless a
``torch.Generator`` is given), so ``torch.manual_seed`` makes training-time augmentation reproducible, and
DataLoader workers, which torch seeds per worker, stay reproducible too.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import MobileNetError
from ..normalization import IMAGENET_MEAN, IMAGENET_STD, LUMA

# Train-time augmentation presets: random-resized-crop area range (share of the image), aspect-ratio range, flip.
# "standard" keeps a crop of at least a quarter of the image rather than the ImageNet recipe's 8 %: at 32-64 pixels
# and on centred objects a smaller crop too often drops the object altogether. "light" is the V1 paper's advice for
# small models ("less regularization and data augmentation techniques because small models have less trouble with
# overfitting"): mild crops and flips only.
AUGMENTATIONS = {
    "standard": {"scale": (0.25, 1.0), "ratio": (3 / 4, 4 / 3), "flip": True},
    "light": {"scale": (0.64, 1.0), "ratio": (9 / 10, 10 / 9), "flip": True},
    "none": None,
}


def gray_stats(mean: tuple[float, ...], std: tuple[float, ...]) -> tuple[tuple[float], tuple[float]]:
    """Single-channel statistics from RGB ones (luma of the means, luma-weighted std), for ``in_chans=1``."""
    if len(mean) == 1:
        return tuple(mean), tuple(std)
    return (sum(w * m for w, m in zip(LUMA, mean)),), (sum(w * s for w, s in zip(LUMA, std)),)


def channel_stats_for(in_chans: int, mean, std) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Statistics for ``in_chans`` channels: RGB ones reduced to luma, or a grayscale pair repeated for RGB."""
    mean, std = tuple(mean), tuple(std)
    if in_chans == 1:
        return gray_stats(mean, std)
    if in_chans == 3 and len(mean) == len(std) == 1:
        return mean * 3, std * 3
    return mean, std


def to_uint8_tensor(image: Image.Image | torch.Tensor | np.ndarray) -> torch.Tensor:
    """A PIL image, an ``[H, W]``/``[H, W, C]`` array or a ``[C, H, W]`` tensor as a ``uint8`` tensor ``[C, H, W]``."""
    if isinstance(image, torch.Tensor):
        return image if image.dim() == 3 else image.unsqueeze(0)
    if isinstance(image, Image.Image):
        if image.mode not in ("L", "RGB"):
            image = image.convert("RGBA").convert("RGB") if "A" in image.mode or image.mode == "P" else image.convert(
                "RGB")
        image = np.array(image)  # a writable copy: torch refuses to wrap read-only buffers silently
    array = torch.from_numpy(np.ascontiguousarray(image))
    return array.unsqueeze(0) if array.dim() == 2 else array.permute(2, 0, 1)


def match_channels(x: torch.Tensor, in_chans: int) -> torch.Tensor:
    """Grayscale -> RGB by repetition, RGB -> grayscale by BT.601 luma; other counts are an error.

    ``x`` is one image ``[C, H, W]`` or a batch ``[B, C, H, W]``: every path (training, evaluation, prediction,
    int8 calibration) converts channels here, so a 1-channel model always sees the same luma.
    """
    c = x.shape[-3]
    if c == in_chans:
        return x
    if c == 1 and in_chans == 3:
        return x.expand(*x.shape[:-3], 3, -1, -1)
    if c == 3 and in_chans == 1:
        weights = torch.tensor(LUMA, dtype=torch.float32).view(3, 1, 1)
        return (x.float() * weights).sum(-3, keepdim=True)
    raise MobileNetError(f"cannot turn a {c}-channel image into {in_chans} channels (supported: 1 or 3)")


class _Transform:
    """Shared tail: crop box -> one resize -> channels -> normalise."""

    def __init__(self, resolution: int, mean, std, in_chans: int = 3):
        if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
            raise MobileNetError(f"resolution must be an integer >= 1, got {resolution!r}")
        if in_chans not in (1, 3):
            raise MobileNetError(f"in_chans must be 1 or 3, got {in_chans!r}")
        mean, std = channel_stats_for(in_chans, mean, std)
        if len(mean) != in_chans or len(std) != in_chans:
            raise MobileNetError(f"mean/std need {in_chans} values, got {len(mean)} and {len(std)}")
        self.resolution, self.in_chans = resolution, in_chans
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        self._mean = torch.tensor(self.mean, dtype=torch.float32).view(-1, 1, 1) * 255.0
        self._scale = 1.0 / (torch.tensor(self.std, dtype=torch.float32).view(-1, 1, 1) * 255.0)

    def draft_size(self) -> int:
        """The smallest source side worth decoding (lets PIL's JPEG decoder downscale for free)."""
        return self.resolution

    def box(self, height: int, width: int) -> tuple[int, int, int, int]:
        raise NotImplementedError

    def flip(self) -> bool:
        return False

    def __call__(self, image) -> torch.Tensor:
        x = to_uint8_tensor(image)
        top, left, h, w = self.box(x.shape[1], x.shape[2])
        x = x[:, top:top + h, left:left + w]
        r = self.resolution
        x = x.float()
        if (h, w) != (r, r):
            x = F.interpolate(x.unsqueeze(0), size=(r, r), mode="bilinear", align_corners=False,
                              antialias=h > r or w > r).squeeze(0)
        if self.flip():
            x = x.flip(-1)
        x = match_channels(x, self.in_chans)
        return ((x - self._mean) * self._scale).contiguous()


class EvalTransform(_Transform):
    """Resize the shorter side to ``resolution`` and centre-crop a square (done as one crop-then-resize)."""

    def box(self, height, width):
        side = min(height, width)
        return (height - side) // 2, (width - side) // 2, side, side

    def __repr__(self):
        return f"EvalTransform(resolution={self.resolution}, in_chans={self.in_chans})"


class TrainTransform(_Transform):
    """Random-resized crop (Inception-style: random area share and aspect ratio) and a random horizontal flip.

    Args:
        resolution: output side R.
        mean, std: per-channel normalisation statistics in [0, 1] units.
        in_chans: 3 or 1.
        scale: range of the crop's area as a share of the image.
        ratio: range of the crop's aspect ratio (width / height), sampled log-uniformly.
        flip: flip horizontally with probability 1/2.
        generator: a ``torch.Generator``; ``None`` uses torch's global generator (seeded by ``torch.manual_seed``).
    """

    def __init__(self, resolution, mean, std, in_chans=3, *, scale=(0.25, 1.0), ratio=(3 / 4, 4 / 3), flip=True,
                 generator: torch.Generator | None = None):
        super().__init__(resolution, mean, std, in_chans)
        if not 0 < scale[0] <= scale[1] <= 1 or not 0 < ratio[0] <= ratio[1]:
            raise MobileNetError(f"bad crop ranges: scale={scale}, ratio={ratio}")
        self.scale, self.ratio, self.do_flip, self.generator = scale, ratio, flip, generator

    def _rand(self, n: int) -> list[float]:
        return torch.rand(n, generator=self.generator).tolist()

    def draft_size(self) -> int:
        return math.ceil(self.resolution / math.sqrt(self.scale[0]))

    def box(self, height, width):
        area = height * width
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        for _ in range(10):
            u_area, u_ratio, u_top, u_left = self._rand(4)
            target = area * (self.scale[0] + u_area * (self.scale[1] - self.scale[0]))
            aspect = math.exp(log_lo + u_ratio * (log_hi - log_lo))
            w = round(math.sqrt(target * aspect))
            h = round(math.sqrt(target / aspect))
            if 0 < w <= width and 0 < h <= height:
                return int(u_top * (height - h + 1)), int(u_left * (width - w + 1)), h, w
        # Rare fallback (extreme aspect ratios): the largest centred crop whose ratio is inside the range.
        aspect = min(max(width / height, self.ratio[0]), self.ratio[1])
        w, h = (width, min(height, round(width / aspect))) if width / height < aspect else (
            min(width, round(height * aspect)), height)
        return (height - h) // 2, (width - w) // 2, h, w

    def flip(self):
        return self.do_flip and self._rand(1)[0] < 0.5

    def __repr__(self):
        return (f"TrainTransform(resolution={self.resolution}, in_chans={self.in_chans}, scale={self.scale}, "
                f"ratio={tuple(round(r, 3) for r in self.ratio)}, flip={self.do_flip})")


def build_transform(augment: str, resolution: int, mean, std, in_chans: int = 3):
    """The training transform for an augmentation preset name (see ``AUGMENTATIONS``); ``"none"`` is eval-like."""
    if augment not in AUGMENTATIONS:
        raise MobileNetError(f"unknown augmentation {augment!r}; expected one of {', '.join(AUGMENTATIONS)}")
    preset = AUGMENTATIONS[augment]
    if preset is None:
        return EvalTransform(resolution, mean, std, in_chans)
    return TrainTransform(resolution, mean, std, in_chans, **preset)


def eval_transform(resolution: int, mean=IMAGENET_MEAN, std=IMAGENET_STD, in_chans: int = 3) -> EvalTransform:
    """The evaluation transform: PIL image (or uint8 ``[C, H, W]`` tensor) -> normalised ``[in_chans, R, R]``.

    The shorter side is resized to ``resolution`` and the centre square kept; values are scaled to [0, 1] and
    normalised with ``mean``/``std`` (per channel, in [0, 1] units; RGB statistics are reduced to luma for
    ``in_chans=1``).
    """
    return EvalTransform(resolution, mean, std, in_chans)


def open_image(path: str | Path, draft: int | None = None) -> Image.Image:
    """Decodes an image file fully (so a truncated file fails here, not later), as RGB or L.

    Raises:
        MobileNetError: naming the path, if the file is missing or not a readable image.
    """
    try:
        with Image.open(path) as img:
            if draft and img.format == "JPEG":
                img.draft(img.mode, (draft, draft))  # DCT-domain downscale: big JPEGs decode several times faster
            img.load()
            if img.mode.startswith("I;16"):  # 16-bit grayscale: rescale, since convert("L") would clip at 255
                return Image.fromarray((np.asarray(img, dtype=np.float32) / 257 + 0.5).astype(np.uint8), "L")
            return img.convert("L") if img.mode in ("L", "I", "F", "1") else img.convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise MobileNetError(f"cannot read image {path}: {exc}") from None


def load_image(path: str | Path, resolution: int, mean=IMAGENET_MEAN, std=IMAGENET_STD,
               in_chans: int = 3) -> torch.Tensor:
    """One image file -> normalised tensor ``[in_chans, R, R]`` through :func:`eval_transform`.

    Raises:
        MobileNetError: if the file is missing or unreadable.
    """
    transform = eval_transform(resolution, mean, std, in_chans)
    return transform(open_image(path, draft=transform.draft_size()))
