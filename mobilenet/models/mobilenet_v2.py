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


@register_model(published=PUBLISHED)
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
