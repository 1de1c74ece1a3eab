"""The embedded dataset "patterns": textured objects whose class is their shape together with their texture.

A class is a (shape, texture) pair: 8 shapes x 8 textures = 64 classes. Each image holds one large object of its
class at a random position, size, rotation, aspect and texture phase, its texture drawn in two random colours, over
a random smooth background with untextured clutter (blobs, thin strokes) and pixel noise. No other class's object
ever appears, so nothing competes for the label.

Why this design (the default dataset that every demo, test and reproduction trains on):

* Texture is what convolutional networks pick up first, as on photographs, so every model leaves chance within its
  first epoch; shape is learned more slowly on top of it, so wider and deeper networks keep an advantage.
* The textures are periodic patterns whose period is a fixed share of the image side, from coarse (grid, bricks)
  to fine (stripes, checks): at ρ = 4/7 of the base resolution the finest fall below two pixels per period and
  alias, so accuracy falls with the resolution multiplier, as on ImageNet, where fine detail vanishes first.
* Drawn natively at any side (supersampled, then box-filtered), so the same image exists at every ρ; an image
  depends only on ``(seed, split, index)``; labels go round-robin, so every split and every prefix of it is
  class-balanced.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from .procedural import ProceduralDataset
from .shapes import SHAPES as _OUTLINES

# Object outlines: distinct silhouettes from "shapes" (area ~π at radius 1), mirror-symmetric as a class.
SHAPE_NAMES = ("circle", "triangle", "square", "star", "cross", "heart", "crescent", "arrow")


def _frac(x: np.ndarray) -> np.ndarray:
    return x - np.floor(x)


# Textures, as functions of texture coordinates (u, v) measured in periods, and of a per-image random generator
# for stochastic ones; each returns the share of the second colour in [0, 1]. The period (share of the image side)
# is part of the class: fine textures are what low resolutions lose first.
def _stripes(u, v, rng):
    return _frac(u) < 0.5


def _checks(u, v, rng):
    return (np.floor(u) + np.floor(v)) % 2 == 0


def _dots(u, v, rng):
    return (_frac(u) - 0.5) ** 2 + (_frac(v) - 0.5) ** 2 < 0.32 ** 2


def _rings(u, v, rng):
    return _frac(np.hypot(u, v)) < 0.5


def _zigzag(u, v, rng):
    tri = np.abs(_frac(v / 1.6) - 0.5) * 2  # triangle wave, period 1.6 along the stripes
    return _frac(u + 0.8 * tri) < 0.5


def _grid(u, v, rng):
    return np.minimum(_frac(u), _frac(v)) < 0.22


def _bricks(u, v, rng):
    row = np.floor(v)
    return (_frac(v) < 0.2) | (_frac(u / 2 + 0.5 * (row % 2)) < 0.1)


def _speckle(u, v, rng):
    # Dots of random size at jittered grid points: a stochastic texture, unlike the regular ones.
    offsets, radii = rng.uniform(0.2, 0.8, (2, 16, 16)), rng.uniform(0.12, 0.3, (16, 16))
    i, j = np.floor(u).astype(int) % 16, np.floor(v).astype(int) % 16
    return (_frac(u) - offsets[0, i, j]) ** 2 + (_frac(v) - offsets[1, i, j]) ** 2 < radii[i, j] ** 2


# name: (function, period as a share of the image side)
TEXTURES = {
    "stripes": (_stripes, 0.050),
    "checks": (_checks, 0.060),
    "dots": (_dots, 0.070),
    "rings": (_rings, 0.055),
    "zigzag": (_zigzag, 0.065),
    "grid": (_grid, 0.085),
    "bricks": (_bricks, 0.095),
    "speckle": (_speckle, 0.075),
}
CLASS_NAMES = tuple(f"{t}-{s}" for s in SHAPE_NAMES for t in TEXTURES)
# Each class has a characteristic hue, as bananas are yellow: one of 16, shared by 4 classes of 4 different shapes
# and 4 different textures (shape s, texture t: hue index 2 * ((t + 3s) mod 8) + s // 4). Colour narrows a class
# down at once (it is what networks learn in their first steps); texture and shape decide it.
CLASS_HUES = tuple((2 * ((t + 3 * s) % 8) + s // 4) / 16 for s in range(len(SHAPE_NAMES)) for t in range(len(TEXTURES)))


@dataclass(frozen=True)
class PatternsConfig:
    """The generator's knobs, in units of the image side unless noted. The defaults are the calibrated dataset."""

    size: tuple[float, float] = (0.28, 0.42)         # object radius
    aspect: tuple[float, float] = (0.85, 1.18)       # x/y stretch before rotation
    period_jitter: float = 0.15                      # texture period varies by this factor either way
    hue_jitter: float = 0.04                         # object hue varies by this much either way (hue in [0, 1))
    background_saturation: float = 0.5              # background colours' saturation is uniform up to this
    blobs: tuple[int, int] = (0, 2)                  # untextured clutter polygons (count range, inclusive)
    strokes: tuple[int, int] = (0, 3)                # thin random strokes (count range, inclusive)
    noise: tuple[float, float] = (0.0, 0.05)         # std of Gaussian pixel noise, in [0, 1] units


# Split sizes and the per-split stream id mixed into each image's seed, so the splits never share an image.
SPLITS = {"train": (12800, 11), "val": (5120, 12), "test": (10240, 13)}
# Per-channel statistics of the default dataset (train split, 2,000 images at 64 px, rounded); tests re-measure them.
PATTERNS_MEAN = (0.443, 0.443, 0.445)
PATTERNS_STD = (0.247, 0.246, 0.247)


class PatternsRenderer:
    """Draws image ``index`` of a split at any side; ``render`` returns ``(uint8 array [R, R, 3], label)``."""

    splits = SPLITS

    def __init__(self, config: PatternsConfig = PatternsConfig(), seed: int = 0):
        self.config, self.seed = config, int(seed)

    def label(self, index: int) -> int:
        return index % len(CLASS_NAMES)

    def render(self, split: str, index: int, resolution: int) -> tuple[np.ndarray, int]:
        cfg, label = self.config, self.label(index)
        shape, texture = SHAPE_NAMES[label // len(TEXTURES)], list(TEXTURES)[label % len(TEXTURES)]
        rng = np.random.default_rng([self.seed, SPLITS[split][1], index])
        ss = max(1, math.ceil(128 / resolution))  # supersampling to a >= 128 px canvas: exact area coverage
        side = resolution * ss
        axis = (np.arange(side) + 0.5) / side

        # Background: a smooth random field (a 3x3 grid of colours, bicubically stretched) with clutter on it.
        hsv = np.array([(rng.random(), rng.uniform(0, cfg.background_saturation), rng.uniform(0.15, 1))
                        for _ in range(9)])
        coarse = (_hsv(hsv[:, :1], hsv[:, 1:2], hsv[:, 2:]).reshape(3, 3, 3) * 255).astype(np.uint8)
        canvas = Image.fromarray(coarse, "RGB").resize((side, side), Image.BICUBIC)
        draw = ImageDraw.Draw(canvas)
        for _ in range(rng.integers(cfg.blobs[0], cfg.blobs[1] + 1)):
            r, (bx, by) = rng.uniform(0.06, 0.15), rng.uniform(0, 1, 2)
            n = rng.integers(3, 8)
            t = np.sort(rng.uniform(0, 2 * math.pi, n))
            pts = np.stack([bx + r * np.cos(t), by + r * np.sin(t)], 1) * side
            draw.polygon([tuple(p) for p in pts.tolist()], fill=_rgb(rng.random(3)))

        # The object: its outline as a mask, filled with its texture in two contrasting colours.
        radius = rng.uniform(*cfg.size)
        cx, cy = rng.uniform(radius, 1 - radius, 2)
        theta = rng.uniform(0, 2 * math.pi)
        stretch = math.exp(rng.uniform(math.log(cfg.aspect[0]), math.log(cfg.aspect[1])))
        rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
        pts = (_OUTLINES[shape] * np.array([stretch, 1 / stretch])) @ rot.T * radius + np.array([cx, cy])
        mask_img = Image.new("L", (side, side), 0)
        ImageDraw.Draw(mask_img).polygon([tuple(p) for p in (pts * side).tolist()], fill=255)
        mask = np.asarray(mask_img) > 127
        rows, cols = np.nonzero(mask)  # the texture is evaluated under the object only

        fn, period = TEXTURES[texture]
        period *= math.exp(rng.uniform(-1, 1) * math.log1p(cfg.period_jitter))
        phi = rng.uniform(0, 2 * math.pi)
        dx, dy = axis[cols] - cx, axis[rows] - cy
        u = (dx * math.cos(phi) + dy * math.sin(phi)) / period + rng.uniform(0, 1)
        v = (-dx * math.sin(phi) + dy * math.cos(phi)) / period + rng.uniform(0, 1)
        if texture == "rings":  # concentric about the object's centre
            u, v = dx / period, dy / period
        share = fn(u, v, rng).astype(np.float32)[:, None]
        hue = CLASS_HUES[label] + rng.uniform(-1, 1) * cfg.hue_jitter
        c0 = _hsv(hue, rng.uniform(0.55, 1.0), rng.uniform(0.6, 1.0))  # the light colour and a dark one
        c1 = _hsv(hue + rng.uniform(-1, 1) * cfg.hue_jitter, rng.uniform(0.3, 1.0), rng.uniform(0.05, 0.4))
        if rng.random() < 0.5:
            c0, c1 = c1, c0
        image = np.array(canvas, dtype=np.float32)
        image[rows, cols] = (c0 * (1 - share) + c1 * share) * 255

        for _ in range(rng.integers(cfg.strokes[0], cfg.strokes[1] + 1)):  # thin strokes, some over the object
            stroke = Image.new("L", (side, side), 0)
            n = rng.integers(2, 5)
            start = rng.uniform(0, 1, 2)
            path = np.concatenate([start[None], start + np.cumsum(rng.normal(0, 0.25, (n - 1, 2)), 0)]) * side
            width = max(1, round(rng.uniform(0.006, 0.015) * side))
            ImageDraw.Draw(stroke).line([tuple(p) for p in path.tolist()], fill=255, width=width, joint="curve")
            on = np.asarray(stroke) > 127
            image[on] = np.array(_rgb(rng.random(3)), dtype=np.float32)

        if ss > 1:  # box filter: each output pixel is the mean of its ss x ss block
            image = _box_mean(image, ss)
        sigma = 255 * rng.uniform(*cfg.noise)
        image += rng.standard_normal(image.shape, dtype=np.float32) * sigma
        return np.clip(image + 0.5, 0, 255).astype(np.uint8), label


def _box_mean(image: np.ndarray, ss: int) -> np.ndarray:
    """The mean of every ss x ss block of a float32 (H, W, 3) image: the same floats, to the bit, as
    ``image.reshape(H // ss, ss, W // ss, ss, 3).mean((1, 3))``, which adds the block row by row, but 3-4x faster
    (that reduction over two strided axes is numpy's slow path)."""
    total = image[::ss, ::ss].copy()
    for i in range(ss):
        for j in range(ss):
            if i or j:
                total += image[i::ss, j::ss]
    return total / np.float32(ss * ss)


def _hsv(h, s, v) -> np.ndarray:
    """An RGB colour in [0, 1] from hue (turns, wrapped), saturation and value; for arrays of shape (N, 1), N
    colours (N, 3)."""
    k = (np.array([5.0, 3.0, 1.0]) + (h % 1.0) * 6) % 6
    return v - v * s * np.clip(np.minimum(k, 4 - k), 0, 1)


def _rgb(colour: np.ndarray) -> tuple[int, int, int]:
    return tuple(int(c * 255 + 0.5) for c in colour)


class PatternsDataset(ProceduralDataset):
    """One split of "patterns" at one resolution, drawn lazily and cached as uint8.

    Args:
        split: "train", "val" or "test".
        resolution: side R of the drawn images.
        transform: callable on a uint8 tensor ``[3, R, R]``; ``None`` returns the uint8 tensor itself.
        size: number of images (default: the split's fixed size); a prefix of the full split, so still balanced.
        seed: the dataset's seed. The default dataset is seed 0; another seed is another draw of the same task.
        config: generator knobs (default: the calibrated ``PatternsConfig()``).
    """

    class_names = CLASS_NAMES

    def __init__(self, split: str, resolution: int, transform=None, size: int | None = None, seed: int = 0,
                 config: PatternsConfig = PatternsConfig(), cache_bytes: int = 2 << 30):
        super().__init__(PatternsRenderer(config, seed), split, resolution, transform, size, cache_bytes)
