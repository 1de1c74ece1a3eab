"""MobileNetV1 (arXiv 1704.04861) and the two baselines the paper compares it against.

* ``mobilenet_v1``: Table 1, a full 3×3 stride-2 conv then 13 depthwise separable layers.
* ``mobilenet_v1_conv``: Table 4's "Conv MobileNet", each depthwise separable layer swapped for one full 3×3 conv.
* ``mobilenet_v1_shallow``: Table 5's "Shallow MobileNet", without the five repeated 14×14×512 layers.
"""

from __future__ import annotations

from torch import nn

from ..layers import ConvBNAct, DepthwiseSeparable, LayerFn, round_channels
from .base import MobileNet, document_args, lookup_published, resolve_args
from .registry import register_model

# Table 1 of arXiv 1704.04861. The stem is "Conv / s2, 3×3×3×32"; each row below is one depthwise separable layer
# (Conv dw 3×3 / s, then Conv 1×1 to c), with the output side at 224 in the comment.
STEM_CHANNELS, STEM_STRIDE = 32, 2  # 112
DW_SEPARABLE_LAYERS = [
    # c,    s       output
    (64, 1),      # 112
    (128, 2),     # 56
    (128, 1),     # 56
    (256, 2),     # 28
    (256, 1),     # 28
    (512, 2),     # 14
    (512, 1),     # 14  ┐
    (512, 1),     # 14  │
    (512, 1),     # 14  │ "5×": the repeated 14×14×512 layers that Shallow MobileNet removes
    (512, 1),     # 14  │
    (512, 1),     # 14  ┘
    (1024, 2),    # 7
    (1024, 1),    # 7   erratum: Table 1 prints s2; the next input (7×7×1024) and the 7×7 pool need s1
]
REPEATED_LAYERS = slice(6, 11)  # the five 14×14×512 rows

# ImageNet numbers printed in the paper for configurations it reports: (alpha, resolution) -> (top-1 %, Mult-Adds M,
# params M). Tables 6, 7 and 9.
PUBLISHED = {
    (1.0, 224): (70.6, 569, 4.2),
    (0.75, 224): (68.4, 325, 2.6),
    (0.5, 224): (63.7, 149, 1.3),
    (0.25, 224): (50.6, 41, 0.5),
    (1.0, 192): (69.1, 418, 4.2),
    (1.0, 160): (67.2, 290, 4.2),
    (1.0, 128): (64.4, 186, 4.2),
    (0.5, 160): (60.2, 76, 1.32),
}
# TF-Slim's released checkpoints (tensorflow/models research/slim/nets/mobilenet_v1.md; ../shared/papers.md §1.17),
# float top-1: (alpha, resolution) -> (top-1 %, MACs M, params M) as printed. The MACs printed for α = 0.75 and for
# 0.25 at 192 disagree with the paper and a direct count (papers.md §7, item 5); the top-1 column is unaffected.
CHECKPOINTS = {
    (1.0, 224): (70.9, 569, 4.24), (1.0, 192): (70.0, 418, 4.24), (1.0, 160): (68.0, 291, 4.24),
    (1.0, 128): (65.2, 186, 4.24),
    (0.75, 224): (68.4, 317, 2.59), (0.75, 192): (67.2, 233, 2.59), (0.75, 160): (65.3, 162, 2.59),
    (0.75, 128): (62.1, 104, 2.59),
    (0.5, 224): (63.3, 150, 1.34), (0.5, 192): (61.7, 110, 1.34), (0.5, 160): (59.1, 77, 1.34),
    (0.5, 128): (56.3, 49, 1.34),
    (0.25, 224): (49.8, 41, 0.47), (0.25, 192): (47.7, 34, 0.47), (0.25, 160): (45.5, 21, 0.47),
    (0.25, 128): (41.5, 14, 0.47),
}
# Every published configuration (the registry's published table, which search interpolates between): the checkpoints,
# with the paper's own numbers where it prints them. A model's ``published`` attribute stays the paper's.
PUBLISHED_ALL = {**CHECKPOINTS, **PUBLISHED}
PUBLISHED_CONV = {(1.0, 224): (71.7, 4866, 29.3)}  # Table 4
PUBLISHED_SHALLOW = {(1.0, 224): (65.3, 307, 2.9)}  # Table 5


def full_conv_layer(in_chs: int, out_chs: int, stride: int, norm_layer: LayerFn, act_layer: LayerFn,
                    padding: str = "symmetric") -> nn.Module:
    """Table 4's baseline layer: one full 3×3 conv + BN + ReLU with the separable layer's channels and stride."""
    return ConvBNAct(in_chs, out_chs, 3, stride, norm_layer=norm_layer, act_layer=act_layer, padding=padding)


def _build(
    name: str,
    layers: list[tuple[int, int]],
    block: LayerFn,
    published: dict,
    *,
    norm_layer: LayerFn = nn.BatchNorm2d,
    act_layer: LayerFn = nn.ReLU,
    padding: str = "symmetric",
    **kwargs,
) -> MobileNet:
    args = resolve_args(**{"rounding": "tf-slim", **kwargs})
    chs = round_channels(STEM_CHANNELS, args.alpha, args.rounding)
    features = [ConvBNAct(args.in_chans, chs, 3, STEM_STRIDE, norm_layer=norm_layer, act_layer=act_layer,
                          padding=padding)]
    for c, s in layers:
        out = round_channels(c, args.alpha, args.rounding)
        features.append(block(chs, out, s, norm_layer=norm_layer, act_layer=act_layer, padding=padding))
        chs = out
    return MobileNet(
        nn.Sequential(*features), chs, args, name,
        published=lookup_published(published, args),
    )


_doc = document_args(
    alpha="rounded by ``rounding``",
    rounding='default ``"tf-slim"``: ``max(int(α·c), 8)``',
    dropout="default 0.0",
    norm_layer="the norm of every layer (default BatchNorm2d; Keras and TF-Slim checkpoints use BN eps 1e-3)",
    act_layer="the activation of every layer (default ReLU; Keras and TF-Slim checkpoints use ReLU6)",
    padding='``"symmetric"`` (default) or ``"same"`` to pad stride-2 layers as TensorFlow does',
)


@register_model(published=PUBLISHED_ALL)
@_doc
def mobilenet_v1(**kwargs) -> MobileNet:
    """MobileNetV1, Table 1 of arXiv 1704.04861: 569M Mult-Adds, 4.2M params at α = 1, 224×224."""
    return _build("mobilenet_v1", DW_SEPARABLE_LAYERS, DepthwiseSeparable, PUBLISHED, **kwargs)


@register_model(published=PUBLISHED_CONV)
@_doc
def mobilenet_v1_conv(**kwargs) -> MobileNet:
    """Conv MobileNet, Table 4 of arXiv 1704.04861: every depthwise separable layer is a full 3×3 conv."""
    return _build("mobilenet_v1_conv", DW_SEPARABLE_LAYERS, full_conv_layer, PUBLISHED_CONV, **kwargs)


@register_model(published=PUBLISHED_SHALLOW)
@_doc
def mobilenet_v1_shallow(**kwargs) -> MobileNet:
    """Shallow MobileNet, Table 5 of arXiv 1704.04861: V1 without the five repeated 14×14×512 layers."""
    layers = DW_SEPARABLE_LAYERS[: REPEATED_LAYERS.start] + DW_SEPARABLE_LAYERS[REPEATED_LAYERS.stop:]
    return _build("mobilenet_v1_shallow", layers, DepthwiseSeparable, PUBLISHED_SHALLOW, **kwargs)
