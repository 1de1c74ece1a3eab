"""Wall-clock speed on this machine: the core idea (one full 3x3 conv vs one depthwise separable layer) and
whole-model inference time per image.

Mult-Adds are a proxy for speed; these measurements show how good a proxy they are here. Every number is a median
over repeats after warm-up, measured in the same process under the same thread count, so the ratios are
comparable even when absolute times move with the machine's load.
"""

from __future__ import annotations

import torch
from torch import nn

from ..cost import count_cost
from ..layers import ConvBNAct, DepthwiseSeparable
from ..timing import alternate, measure

# V1 Table 3's example layer: D_F = 14, M = N = 512, D_K = 3; the brief's batch of 32 images.
CORE_SIDE, CORE_CHANNELS, CORE_KERNEL, CORE_BATCH = 14, 512, 3, 32


def theoretical_ratio(channels: int = CORE_CHANNELS, kernel: int = CORE_KERNEL) -> float:
    """Full conv cost / depthwise separable cost = 1 / (1/N + 1/D_K²) (V1 §3.1)."""
    return 1.0 / (1.0 / channels + 1.0 / kernel**2)


def _prepare(module: nn.Module, x: torch.Tensor, channels_last: bool):
    module = module.eval()
    if channels_last:
        module = module.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    return lambda: module(x)


def interleaved_seconds(fns: dict, repeats: int, warmup: int = 2) -> dict:
    """Median seconds of each callable, timed in alternation round by round (one call of each per round).

    Alternating the variants means a change in the machine's load hits all of them alike, which keeps their ratios
    meaningful on a shared CPU. All variants are torch modules sharing one thread pool, so one call per round does
    not let one variant's threads disturb the next (that needs :func:`mobilenet.timing.alternate`'s blocks).
    """
    with torch.inference_mode():
        timings = alternate(fns, rounds=repeats, block=1, warmup=warmup)
    return {name: t.median for name, t in timings.items()}


def core_idea_speed(repeats: int = 10, batch: int = CORE_BATCH, seed: int = 0) -> dict:
    """Times one 14x14, 512 -> 512 layer as a full 3x3 conv and as a depthwise separable layer.

    Both layers are the library's own modules (conv + BN + ReLU), in eval mode, in NCHW and channels_last. The
    depthwise and pointwise halves are also timed alone, to show where the separable layer's time goes.

    Args:
        repeats: timed calls per measurement (the median is kept).
        batch: images per call (32 by default).
        seed: seeds the random input and weights.

    Returns:
        A dict with the theoretical ratio, the exact Mult-Adds of each layer, and per layout the seconds per batch
        of each variant and the measured full / separable ratio.
    """
    torch.manual_seed(seed)
    c, side = CORE_CHANNELS, CORE_SIDE
    full = ConvBNAct(c, c, CORE_KERNEL)
    separable = DepthwiseSeparable(c, c, kernel_size=CORE_KERNEL)
    x = torch.randn(batch, c, side, side)
    result = {
        "batch": batch, "side": side, "channels": c, "kernel": CORE_KERNEL, "threads": torch.get_num_threads(),
        "repeats": repeats,
        "theoretical_ratio": theoretical_ratio(c, CORE_KERNEL),
        "mult_adds": {"full": count_cost(full, side).mult_adds, "separable": count_cost(separable, side).mult_adds},
        "layouts": {},
    }
    for layout, channels_last in (("NCHW", False), ("channels_last", True)):
        variants = {"full": full, "separable": separable, "depthwise": separable.dw, "pointwise": separable.pw}
        times = interleaved_seconds({k: _prepare(m, x, channels_last) for k, m in variants.items()}, repeats)
        result["layouts"][layout] = {"seconds": times, "ratio": times["full"] / times["separable"]}
    return result


def inference_seconds_per_image(model: nn.Module, resolution: int, batch: int = 32, repeats: int = 5) -> float:
    """Median eval-mode wall-clock seconds per image for ``batch`` random images at ``resolution`` (NCHW)."""
    x = torch.randn(batch, getattr(model, "in_chans", 3), resolution, resolution)
    with torch.inference_mode():
        return measure(_prepare(model, x, False), min_time=0.0, max_runs=max(1, repeats)).median / batch
