"""The embedded dataset "shapes": procedurally drawn shapes whose class is only their outline.

Each image holds one large shape of the labelled class at a random colour, size, rotation, aspect, position and
fill style (solid or outline), over a random two-colour gradient, with clutter (thin strokes and smaller shapes of
other classes, a few of them in front of the main shape) and pixel noise. Colour, position and texture carry no
information about the class, so a model has to learn structure: corners, their count, concavities, holes.

Images are drawn natively at the requested side (polygons rasterised by PIL at a supersampled size, then
box-filtered down), so the same image exists at 224, 160, 64 or 32 pixels. An image depends only on
``(seed, split, index)``, never on the resolution's drawing order or on other images, and is cached once drawn.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from .procedural import ProceduralDataset


def _polygon(n: int, radius: float = 1.0, phase: float = math.pi / 2) -> np.ndarray:
    t = phase + 2 * math.pi * np.arange(n) / n
    return np.stack([radius * np.cos(t), radius * np.sin(t)], 1)


def _star(points: int, inner: float) -> np.ndarray:
    outer, inside = _polygon(points), _polygon(points, inner, math.pi / 2 + math.pi / points)
    return np.stack([outer, inside], 1).reshape(-1, 2)


def _arc(cx: float, cy: float, r: float, t0: float, t1: float, n: int) -> np.ndarray:
    t = np.linspace(t0, t1, n)
    return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], 1)


def _heart() -> np.ndarray:
    t = np.linspace(0, 2 * math.pi, 48, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = 13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)
    return np.stack([x, y + 2.5], 1) / 15.5


def _crescent() -> np.ndarray:
    # Outer arc of the unit circle, back along an inner circle shifted right: a moon two-thirds eaten.
    outer = _arc(0, 0, 1.0, math.radians(60), math.radians(300), 28)
    inner = _arc(0.55, 0, 0.87, math.radians(-96), math.radians(-264), 24)
    return np.concatenate([outer, inner])


# Class templates, each centred near the origin with an area of roughly π (the unit disc's), so size is no clue.
# Mirror images share a class (a flipped arrow is an arrow), so horizontal-flip augmentation keeps labels right.
SHAPES: dict[str, np.ndarray] = {
    "circle": _polygon(40),
    "triangle": _polygon(3, 1.35),
    "square": _polygon(4, 1.25, math.pi / 4),
    "pentagon": _polygon(5, 1.1),
    "hexagon": _polygon(6, 1.05),
    "star": _star(5, 0.5) * 1.3,
    "cross": np.array([[-.3, -1], [.3, -1], [.3, -.3], [1, -.3], [1, .3], [.3, .3], [.3, 1], [-.3, 1], [-.3, .3],
                       [-1, .3], [-1, -.3], [-.3, -.3]]) * 1.2,
    "arrow": np.array([[-1, -.22], [.15, -.22], [.15, -.62], [1, 0], [.15, .62], [.15, .22], [-1, .22]]) * 1.35,
    "crescent": _crescent() * 1.3,
    "heart": _heart() * 1.15,
    "semicircle": np.concatenate([_arc(0, -0.4, 1.4, 0, math.pi, 24)]),
    "bolt": np.array([[-.15, -1], [.55, -1], [.15, -.15], [.6, -.15], [-.35, 1], [-.05, .1], [-.5, .1]]) * 1.3,
}
CLASS_NAMES = tuple(SHAPES)


@dataclass(frozen=True)
class ShapesConfig:
    """The generator's knobs, in units of the image side unless noted. The defaults are the calibrated dataset.

    Calibrated with SGD (momentum 0.9, peak rate 0.1, cosine, label smoothing 0.1, batch 64, "light"
    augmentation), 20 epochs: mobilenet_v1 α=0.5 at 64 px reaches 67.7 % val top-1; with lighter clutter (no
    minimum of distractors, less noise and fewer outlines) the same run reached 92.4 % at 64 px and 54.8 % at 32 px.
    """

    size: tuple[float, float] = (0.18, 0.36)         # main shape's radius
    aspect: tuple[float, float] = (0.87, 1.15)       # x/y stretch before rotation
    outline_prob: float = 0.25                       # share of outline-only (not filled) main shapes
    outline_width: tuple[float, float] = (0.12, 0.25)  # outline width, as a share of the radius
    min_contrast: float = 0.3                        # luma gap between the main shape and the background, in [0, 1]
    distractor_shapes: tuple[int, int] = (1, 3)      # smaller shapes of other classes (count range, inclusive)
    distractor_scale: tuple[float, float] = (0.25, 0.5)  # their radius relative to the main shape's
    strokes: tuple[int, int] = (1, 4)                # thin random strokes (count range, inclusive)
    front_prob: float = 0.25                         # chance each clutter item is drawn over the main shape
    noise: tuple[float, float] = (0.01, 0.08)        # std of Gaussian pixel noise, in [0, 1] units


# Split sizes and the per-split stream id mixed into each image's seed, so the splits never share an image.
SPLITS = {"train": (8000, 1), "val": (1000, 2), "test": (1000, 3)}
# Per-channel statistics of the default dataset (train split, measured over 2,000 images at 64 px, rounded);
# tests/test_data.py re-measures them.
SHAPES_MEAN = (0.497, 0.499, 0.504)
SHAPES_STD = (0.259, 0.271, 0.256)


def _luma(rgb: np.ndarray) -> float:
    return float(rgb @ np.array([0.299, 0.587, 0.114]))


class ShapesRenderer:
    """Draws image ``index`` of a split at any side; ``render`` returns ``(uint8 array [R, R, 3], label)``."""

    splits = SPLITS

    def __init__(self, config: ShapesConfig = ShapesConfig(), seed: int = 0):
        self.config, self.seed = config, int(seed)

    def label(self, index: int) -> int:
        return index % len(CLASS_NAMES)  # round-robin: every split, and every prefix of it, is class-balanced

    def render(self, split: str, index: int, resolution: int) -> tuple[np.ndarray, int]:
        cfg, label = self.config, self.label(index)
        rng = np.random.default_rng([self.seed, SPLITS[split][1], index])
        ss = 4 if resolution <= 64 else 2 if resolution <= 160 else 1  # supersampling: ~256-320 px canvases
        side = resolution * ss
        # Background: a linear gradient between two random colours in a random direction, drawn at 2x2 and
        # stretched by PIL's bilinear resize to the canvas (cheaper than evaluating it per pixel).
        c0, c1 = rng.random(3), rng.random(3)
        angle = rng.uniform(0, 2 * math.pi)
        corners = np.array([[-1, -1], [1, -1], [-1, 1], [1, 1]]) @ np.array([math.cos(angle), math.sin(angle)])
        ramp = (corners / (2 * max(np.abs(corners).max(), 1e-6)) + 0.5).reshape(2, 2, 1)
        quad = ((c0 * (1 - ramp) + c1 * ramp) * 255).astype(np.uint8)
        canvas = Image.fromarray(quad, "RGB").resize((side, side), Image.BILINEAR)
        bg_luma = (_luma(c0) + _luma(c1)) / 2

        radius = rng.uniform(*cfg.size)
        cx, cy = rng.uniform(radius, 1 - radius, 2)
        main = self._shape(rng, CLASS_NAMES[label], cx, cy, radius, cfg.outline_prob, side)
        back, front = [], []
        others = [n for n in CLASS_NAMES if n != CLASS_NAMES[label]]
        for _ in range(rng.integers(cfg.distractor_shapes[0], cfg.distractor_shapes[1] + 1)):
            r = radius * rng.uniform(*cfg.distractor_scale)
            x, y = rng.uniform(r, 1 - r, 2)
            item = self._shape(rng, others[rng.integers(len(others))], x, y, r, 0.5, side)
            (front if rng.random() < cfg.front_prob else back).append((item, _rgb(rng.random(3))))
        for _ in range(rng.integers(cfg.strokes[0], cfg.strokes[1] + 1)):
            item = self._stroke(rng, side)
            (front if rng.random() < cfg.front_prob else back).append((item, _rgb(rng.random(3))))
        colour = rng.random(3)
        for _ in range(20):  # keep the main shape visible against the background
            if abs(_luma(colour) - bg_luma) >= cfg.min_contrast:
                break
            colour = rng.random(3)

        draw = ImageDraw.Draw(canvas)
        for (kind, points, width), fill in back + [(main, _rgb(colour))] + front:
            if kind == "polygon":
                draw.polygon(points, fill=fill)
            else:
                draw.line(points, fill=fill, width=width, joint="curve")
        if ss > 1:
            canvas = canvas.reduce(ss)  # box filter: exact area coverage, the anti-aliasing
        image = np.asarray(canvas, dtype=np.float32)
        sigma = 255 * rng.uniform(*cfg.noise)
        image += rng.standard_normal(image.shape, dtype=np.float32) * sigma
        return np.clip(image + 0.5, 0, 255).astype(np.uint8), label

    def _shape(self, rng, name, cx, cy, radius, outline_prob, side):
        """A drawing command for shape ``name``: (kind, points in canvas pixels, line width)."""
        cfg = self.config
        theta = rng.uniform(0, 2 * math.pi)
        stretch = math.exp(rng.uniform(math.log(cfg.aspect[0]), math.log(cfg.aspect[1])))
        pts = SHAPES[name] * np.array([stretch, 1 / stretch])
        rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
        flat = [tuple(p) for p in ((pts @ rot.T * radius + np.array([cx, cy])) * side).tolist()]
        if rng.random() < outline_prob:
            width = max(1, round(rng.uniform(*cfg.outline_width) * radius * side))
            return "line", flat + flat[:2], width
        return "polygon", flat, 0

    def _stroke(self, rng, side):
        n = rng.integers(2, 5)
        start = rng.uniform(0, 1, 2)
        steps = rng.normal(0, 0.25, (n - 1, 2))
        pts = np.clip(np.concatenate([start[None], start + np.cumsum(steps, 0)]), -0.1, 1.1) * side
        width = max(1, round(rng.uniform(0.008, 0.025) * side))
        return "line", [tuple(p) for p in pts.tolist()], width


def _rgb(colour: np.ndarray) -> tuple[int, int, int]:
    return tuple(int(c * 255 + 0.5) for c in colour)


class ShapesDataset(ProceduralDataset):
    """One split of "shapes" at one resolution, drawn lazily and cached as uint8.

    Args:
        split: "train", "val" or "test".
        resolution: side R of the drawn images.
        transform: callable on a uint8 tensor ``[3, R, R]`` (see ``mobilenet.data.transforms``); ``None`` returns
            the uint8 tensor itself.
        size: number of images (default: the split's fixed size); a prefix of the full split, so still balanced.
        seed: the dataset's seed. The default dataset is seed 0; another seed is another draw of the same task.
        config: generator knobs (default: the calibrated ``ShapesConfig()``).
        cache_bytes: upper bound on the cache (images past it are redrawn each time).
    """

    class_names = CLASS_NAMES

    def __init__(self, split: str, resolution: int, transform=None, size: int | None = None, seed: int = 0,
                 config: ShapesConfig = ShapesConfig(), cache_bytes: int = 2 << 30):
        super().__init__(ShapesRenderer(config, seed), split, resolution, transform, size, cache_bytes)
