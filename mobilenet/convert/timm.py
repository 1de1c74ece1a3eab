"""timm's MobileNet state dicts (``mobilenetv1_100``, ``mobilenetv2_*``, ``mobilenetv3_large_100/small_100``, and the
``tf_`` ports of V3).

Layouts (timm/models/efficientnet.py, mobilenetv3.py, _efficientnet_blocks.py): ``conv_stem`` + ``bn1``, then
``blocks.<stage>.<index>``, one stage per row of the paper's table, each block one of

* DepthwiseSeparableConv: ``conv_dw``, ``bn1``, [``se.conv_reduce``, ``se.conv_expand``], ``conv_pw``, ``bn2``
  (V1's layers, and the first, unexpanded block of V2 and V3);
* InvertedResidual: ``conv_pw``, ``bn1``, ``conv_dw``, ``bn2``, [``se``], ``conv_pwl``, ``bn3``;
* ConvBnAct: ``conv``, ``bn1`` (V3's last 1×1 conv, as the last stage);

then V2's ``conv_head`` + ``bn2``, or V3's ``conv_head`` (a 1×1 conv with bias after pooling, our ``head.0``); then
``classifier``. BN layers are BatchNormAct2d, whose tensors are BatchNorm2d's. timm's own V1/V2/V3 use BN eps 1e-5
and symmetric padding, V1 and V2 ReLU6; the ``tf_`` V3 ports use TF "same" padding and eps 1e-3 with inputs in [-1, 1].
"""

from __future__ import annotations

from functools import partial

from torch import nn

from ..layers import ConvBNAct, DepthwiseSeparable
from ..normalization import INCEPTION_MEAN, INCEPTION_STD
from .common import Link, SourceModel, conv_bn, has_expand, has_se, stage_index

# Blocks per stage, as timm groups them (one stage per table row; V3's last stage is the 1×1 conv).
V1_STAGES = [1, 2, 2, 6, 2]
V2_STAGES = [1, 2, 3, 4, 3, 3, 1]
V3_LARGE_STAGES = [1, 2, 3, 4, 2, 3, 1]
V3_SMALL_STAGES = [1, 2, 3, 2, 3, 1]


def _se(p: str, q: str) -> list[Link]:
    return [Link(f"{p}.se.fc1", f"{q}.se.conv_reduce", "conv_bias"),
            Link(f"{p}.se.fc2", f"{q}.se.conv_expand", "conv_bias")]


def _links(model: nn.Module, stages: list[int]) -> list[Link]:
    """The map for any of the three: the body's blocks between the stem and the head, split into ``stages``."""
    features = list(model.features)
    stem, body = features[0], features[1:]
    links = conv_bn("features.0", "conv_stem", "bn1")
    head_conv = None
    if sum(stages) == len(body) - 1:  # V2: the last 1×1 conv is timm's conv_head + bn2, outside the blocks
        head_conv, body = body[-1], body[:-1]
    assert isinstance(stem, ConvBNAct)
    for n, (block, (s, j)) in enumerate(zip(body, stage_index(stages, len(body))), start=1):
        p, q = f"features.{n}", f"blocks.{s}.{j}"
        if isinstance(block, DepthwiseSeparable):
            links += conv_bn(f"{p}.dw", f"{q}.conv_dw", f"{q}.bn1", depthwise=True)
            links += conv_bn(f"{p}.pw", f"{q}.conv_pw", f"{q}.bn2")
        elif isinstance(block, ConvBNAct):
            links += conv_bn(p, f"{q}.conv", f"{q}.bn1")
        elif not has_expand(block):
            links += conv_bn(f"{p}.dw", f"{q}.conv_dw", f"{q}.bn1", depthwise=True)
            links += _se(p, q) if has_se(block) else []
            links += conv_bn(f"{p}.project", f"{q}.conv_pw", f"{q}.bn2")
        else:
            links += conv_bn(f"{p}.expand", f"{q}.conv_pw", f"{q}.bn1")
            links += conv_bn(f"{p}.dw", f"{q}.conv_dw", f"{q}.bn2", depthwise=True)
            links += _se(p, q) if has_se(block) else []
            links += conv_bn(f"{p}.project", f"{q}.conv_pwl", f"{q}.bn3")
    if head_conv is not None:
        links += conv_bn(f"features.{len(features) - 1}", "conv_head", "bn2")
    if isinstance(getattr(model, "head", None), nn.Sequential):
        links.append(Link("head.0", "conv_head", "conv_as_linear"))
    return links + [Link("classifier", "classifier", "linear")]


_V1 = dict(model="mobilenet_v1", links=partial(_links, stages=V1_STAGES), classifier="classifier.weight",
           width_probe=("blocks.4.1.conv_pw.weight", 1024), options={"act": "relu6", "rounding": "divisible8"})
_V2 = dict(model="mobilenet_v2", links=partial(_links, stages=V2_STAGES), classifier="classifier.weight",
           width_probe=("blocks.6.0.conv_pwl.weight", 320))
_LARGE = dict(model="mobilenet_v3_large", links=partial(_links, stages=V3_LARGE_STAGES),
              classifier="classifier.weight", width_probe=("blocks.5.2.conv_pwl.weight", 160))
_SMALL = dict(model="mobilenet_v3_small", links=partial(_links, stages=V3_SMALL_STAGES),
              classifier="classifier.weight", width_probe=("blocks.4.2.conv_pwl.weight", 96))
# timm's own V3 training uses PyTorch's BN eps; the tf_ ports keep TF's eps, padding and input range.
_TIMM_BN = {"bn_eps": 1e-5, "bn_momentum": 0.1}
_TF = {"padding": "same", "bn_eps": 1e-3}
_TF_INPUT = dict(mean=INCEPTION_MEAN, std=INCEPTION_STD)

MODELS = {
    # timm rounds every width to a multiple of 8 (round_channels), V1 included, and uses ReLU6 for V1.
    "mobilenetv1_100": SourceModel("mobilenetv1_100", alpha=1.0, **_V1),
    "mobilenetv1_125": SourceModel("mobilenetv1_125", alpha=1.25, **_V1),
    "mobilenetv2_035": SourceModel("mobilenetv2_035", alpha=0.35, **_V2),
    "mobilenetv2_050": SourceModel("mobilenetv2_050", alpha=0.5, **_V2),
    "mobilenetv2_075": SourceModel("mobilenetv2_075", alpha=0.75, **_V2),
    "mobilenetv2_100": SourceModel("mobilenetv2_100", alpha=1.0, **_V2),
    "mobilenetv2_140": SourceModel("mobilenetv2_140", alpha=1.4, **_V2),
    "mobilenetv3_large_100": SourceModel("mobilenetv3_large_100", alpha=1.0, options=_TIMM_BN, **_LARGE),
    "mobilenetv3_small_100": SourceModel("mobilenetv3_small_100", alpha=1.0, options=_TIMM_BN, **_SMALL),
    "tf_mobilenetv3_large_100": SourceModel("tf_mobilenetv3_large_100", alpha=1.0, options=_TF, **_LARGE,
                                            **_TF_INPUT),
    "tf_mobilenetv3_small_100": SourceModel("tf_mobilenetv3_small_100", alpha=1.0, options=_TF, **_SMALL,
                                            **_TF_INPUT),
}
