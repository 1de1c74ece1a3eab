"""Paired comparisons of trained models: accuracy differences with bootstrap intervals, and the verdict rule.

Every compared model is trained with the same seeds, and seed ``s`` fixes the data order and augmentation for all
of them, and every model is evaluated on the same test images, so two models' results pair up image by image and
seed by seed. The difference of their accuracies is estimated by its mean over seeds and images; its 95 % interval
comes from a bootstrap that resamples both sources of noise at once: the seeds (which training runs happened) and
the test images (which pictures were drawn).

The verdict rule, the same for every claim: a claim names the region its difference must lie in (for example
"MobileNet loses at most 3 points": Conv minus MobileNet <= 3). It **holds** when the whole 95 % interval lies in
that region, **does not hold** when the whole interval lies outside it, and is **not resolved** otherwise.
"""

from __future__ import annotations

import base64
import math

import numpy as np

CONFIDENCE = 0.95
BOOTSTRAP_SAMPLES = 4000


def pack_correct(correct) -> str:
    """A boolean vector (one entry per test image) as base64 text, for the run's JSON."""
    bits = np.packbits(np.asarray(correct, dtype=bool))
    return base64.b64encode(bits.tobytes()).decode("ascii")


def unpack_correct(text: str, n: int) -> np.ndarray:
    """The inverse of :func:`pack_correct` for ``n`` images."""
    bits = np.frombuffer(base64.b64decode(text), dtype=np.uint8)
    return np.unpackbits(bits)[:n].astype(bool)


def paired_difference(a: np.ndarray, b: np.ndarray, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> dict:
    """Mean difference of accuracy (points) between two models, and its bootstrap interval.

    Args:
        a, b: ``[seeds, images]`` boolean arrays: whether model A (B) trained with seed ``s`` classified test image
            ``i`` correctly. Row ``s`` of both must come from the same seed.
        samples: bootstrap resamples.
        seed: the bootstrap's own random seed (the interval is reproducible).

    Returns:
        ``{"mean", "low", "high", "seeds", "images"}``: A's accuracy minus B's in points, and the
        ``CONFIDENCE`` interval's bounds (percentile bootstrap over seeds and images together).
    """
    a, b = np.atleast_2d(np.asarray(a, dtype=np.float64)), np.atleast_2d(np.asarray(b, dtype=np.float64))
    if a.shape != b.shape:
        raise ValueError(f"paired results must have the same shape, got {a.shape} and {b.shape}")
    seeds, images = a.shape
    diff = a - b
    rng = np.random.default_rng(seed)
    # Resampling images with replacement only changes how often each per-image pattern of differences across the
    # seeds (at most 3^seeds kinds) occurs, so drawing those counts from a multinomial is the same bootstrap as
    # drawing image indices, at a cost independent of the number of images.
    patterns, counts = np.unique(diff.T, axis=0, return_counts=True)  # [kinds, seeds], [kinds]
    drawn = rng.multinomial(images, counts / images, size=samples)  # [samples, kinds]
    per_seed = drawn @ patterns / images  # [samples, seeds]: each seed's mean difference in the resample
    seed_counts = rng.multinomial(seeds, np.full(seeds, 1 / seeds), size=samples)  # [samples, seeds]
    means = 100 * (seed_counts * per_seed).sum(1) / seeds
    tail = (1 - CONFIDENCE) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return {"mean": 100 * float(diff.mean()), "low": float(low), "high": float(high), "seeds": seeds,
            "images": images}


def verdict(low: float, high: float, region: tuple[float, float]) -> str:
    """The rule: "holds" if [low, high] lies inside ``region``, "does not hold" if it lies wholly outside,
    "not resolved" if it straddles a boundary. ``region`` is ``(lo, hi)``, either end may be infinite; ends are
    exclusive where infinite is not meant (a difference must exceed 0 to be "better")."""
    lo, hi = region
    if lo < low and high < hi:
        return "holds"
    if high <= lo or low >= hi:
        return "does not hold"
    return "not resolved"


def combine(verdicts: list[str]) -> str:
    """One verdict for a claim made of several (a monotone fall is every step a fall): any "does not hold" decides,
    then any "not resolved"; it holds only if every part holds."""
    if not verdicts:
        return "not measured"
    for word in ("does not hold", "not resolved"):
        if word in verdicts:
            return word
    return "holds"


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    n = len(values)
    mean = sum(values) / n
    return mean, (math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0)
