"""MobileNetV2 (arXiv 1801.04381): inverted residuals with linear bottlenecks."""

from __future__ import annotations

from torch import nn

from ..layers import ConvBNAct, InvertedResidual, LayerFn, round_channels
from .base import MobileNet, document_args, lookup_published, resolve_args
from .registry import register_model

# Table 2 of arXiv 1801.04381. Each bottleneck row is repeated n times; the first repeat has stride s, the rest 1.
# t is the expansion factor applied to the block's input channels. (The text says "19 residual bottleneck layers";
# the n column sums to 17, which is what the reference implementations build.)
STEM_CHANNELS, STEM_STRIDE = 32, 2  # conv2d 3×3, output 112²
BOTTLENECKS = [
    # t, c,   n, s      output at 224
    (1, 16, 1, 1),    # 112² × 16   (t = 1: no expansion conv)
    (6, 24, 2, 2),    # 56² × 24
    (6, 32, 3, 2),    # 28² × 32
    (6, 64, 4, 2),    # 14² × 64
    (6, 96, 3, 1),    # 14² × 96
    (6, 160, 3, 2),   # 7² × 160
    (6, 320, 1, 1),   # 7² × 320
]
LAST_CHANNELS = 1280  # conv2d 1×1, 7² × 1280; scaled only when α > 1 ("all layers except the very last")

# ImageNet numbers printed in Table 4: (alpha, resolution) -> (top-1 %, Mult-Adds M, params M).
PUBLISHED = {
    (1.0, 224): (72.0, 300, 3.4),
    (1.4, 224): (74.7, 585, 6.9),
}

# TF-Slim's checkpoint table (tensorflow/models research/slim/nets/mobilenet/README.md; ../shared/papers.md §3.6):
# (alpha, resolution) -> (top-1 %, MACs M, params M). The counter reproduces every MACs and params cell.
CHECKPOINTS = {
    (1.4, 224): (75.0, 582, 6.06), (1.3, 224): (74.4, 509, 5.34),
    (1.0, 224): (71.8, 300, 3.47), (1.0, 192): (70.7, 221, 3.47), (1.0, 160): (68.8, 154, 3.47),
    (1.0, 128): (65.3, 99, 3.47), (1.0, 96): (60.3, 56, 3.47),
    (0.75, 224): (69.8, 209, 2.61), (0.75, 192): (68.7, 153, 2.61), (0.75, 160): (66.4, 107, 2.61),
    (0.75, 128): (63.2, 69, 2.61), (0.75, 96): (58.8, 39, 2.61),
    (0.5, 224): (65.4, 97, 1.95), (0.5, 192): (63.9, 71, 1.95), (0.5, 160): (61.0, 50, 1.95),
    (0.5, 128): (57.7, 32, 1.95), (0.5, 96): (51.2, 18, 1.95),
    (0.35, 224): (60.3, 59, 1.66), (0.35, 192): (58.2, 43, 1.66), (0.35, 160): (55.7, 30, 1.66),
    (0.35, 128): (50.8, 20, 1.66), (0.35, 96): (45.5, 11, 1.66),
}
# Every published configuration (the registry's published table, which search interpolates between): the checkpoints,
# with the paper's Table 4 numbers where it prints them. A model's ``published`` attribute stays the paper's.
PUBLISHED_ALL = {**CHECKPOINTS, **PUBLISHED}

@register_model(published=PUBLISHED_ALL)
@document_args(
    alpha="applied to every layer; the last 1×1 conv (1280) only when α > 1",
    dropout="default 0.2, as the reference code",
    rounding='default ``"divisible8"``',
    norm_layer="the norm of every layer (default BatchNorm2d)",
    act_layer="the activation of every layer (default ReLU6)",
    padding='``"symmetric"`` (default) or ``"same"`` to pad stride-2 layers as TensorFlow does',
)
def mobilenet_v2(*, norm_layer: LayerFn = nn.BatchNorm2d, act_layer: LayerFn = nn.ReLU6, padding: str = "symmetric",
                 **kwargs) -> MobileNet:
    """MobileNetV2, Table 2 of arXiv 1801.04381: 300M Mult-Adds, 3.4M params at α = 1, 224×224."""
    args = resolve_args(**{"dropout": 0.2, **kwargs})
    chs = round_channels(STEM_CHANNELS, args.alpha, args.rounding)
    features: list[nn.Module] = [
        ConvBNAct(args.in_chans, chs, 3, STEM_STRIDE, norm_layer=norm_layer, act_layer=act_layer, padding=padding)
    ]
    for t, c, n, s in BOTTLENECKS:
        out = round_channels(c, args.alpha, args.rounding)
        for i in range(n):
            features.append(InvertedResidual(chs, int(round(chs * t)), out, s if i == 0 else 1,
                                             norm_layer=norm_layer, act_layer=act_layer, padding=padding))
            chs = out
    last = round_channels(LAST_CHANNELS, max(1.0, args.alpha), args.rounding)
    features.append(ConvBNAct(chs, last, 1, norm_layer=norm_layer, act_layer=act_layer))
    return MobileNet(
        nn.Sequential(*features), last, args, "mobilenet_v2",
        published=lookup_published(PUBLISHED, args),
    )
