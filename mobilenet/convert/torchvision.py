"""torchvision's MobileNet state dicts (``torchvision.models.mobilenet_v2``, ``mobilenet_v3_large/small``).

Layouts (torchvision/models/mobilenetv2.py and mobilenetv3.py):

* V2: ``features.0`` = Conv2dNormActivation (``.0`` conv, ``.1`` BN); ``features.1-17`` = InvertedResidual whose
  ``conv`` Sequential is [expand Conv2dNormActivation (not in the t = 1 block)], depthwise Conv2dNormActivation,
  the projection Conv2d and its BatchNorm2d; ``features.18`` = the last 1×1 Conv2dNormActivation;
  ``classifier`` = [Dropout, Linear]. BN eps 1e-5, ReLU6, symmetric padding: our defaults.
* V3: ``features.i.block`` = [expand], depthwise, [SqueezeExcitation with ``fc1``/``fc2``], projection, each a
  Conv2dNormActivation; ``classifier`` = [Linear, Hardswish, Dropout, Linear]. BN eps 0.001 (our V3 default).
"""

from __future__ import annotations

from torch import nn

from ..layers import ConvBNAct
from .common import Link, SourceModel, conv_bn, has_expand, has_se


def _v2_links(model: nn.Module) -> list[Link]:
    links: list[Link] = []
    for i, block in enumerate(model.features):
        p = f"features.{i}"
        if isinstance(block, ConvBNAct):
            links += conv_bn(p, f"{p}.0", f"{p}.1")
            continue
        j = 0
        if has_expand(block):
            links += conv_bn(f"{p}.expand", f"{p}.conv.0.0", f"{p}.conv.0.1")
            j = 1
        links += conv_bn(f"{p}.dw", f"{p}.conv.{j}.0", f"{p}.conv.{j}.1", depthwise=True)
        links += conv_bn(f"{p}.project", f"{p}.conv.{j + 1}", f"{p}.conv.{j + 2}")
    return links + [Link("classifier", "classifier.1", "linear")]


def _v3_links(model: nn.Module) -> list[Link]:
    links: list[Link] = []
    for i, block in enumerate(model.features):
        p = f"features.{i}"
        if isinstance(block, ConvBNAct):
            links += conv_bn(p, f"{p}.0", f"{p}.1")
            continue
        j = 0
        if has_expand(block):
            links += conv_bn(f"{p}.expand", f"{p}.block.{j}.0", f"{p}.block.{j}.1")
            j += 1
        links += conv_bn(f"{p}.dw", f"{p}.block.{j}.0", f"{p}.block.{j}.1", depthwise=True)
        j += 1
        if has_se(block):
            links += [Link(f"{p}.se.fc1", f"{p}.block.{j}.fc1", "conv_bias"),
                      Link(f"{p}.se.fc2", f"{p}.block.{j}.fc2", "conv_bias")]
            j += 1
        links += conv_bn(f"{p}.project", f"{p}.block.{j}.0", f"{p}.block.{j}.1")
    return links + [Link("head.0", "classifier.0", "linear"), Link("classifier", "classifier.3", "linear")]


_V3_BN = {"bn_eps": 1e-3, "bn_momentum": 0.01}  # torchvision's V3 norm_layer

MODELS = {
    "mobilenet_v2": SourceModel(
        "mobilenet_v2", "mobilenet_v2", _v2_links, "classifier.1.weight", ("features.17.conv.2.weight", 320)),
    "mobilenet_v3_large": SourceModel(
        "mobilenet_v3_large", "mobilenet_v3_large", _v3_links, "classifier.3.weight",
        ("features.15.block.3.0.weight", 160), options=_V3_BN),
    "mobilenet_v3_small": SourceModel(
        "mobilenet_v3_small", "mobilenet_v3_small", _v3_links, "classifier.3.weight",
        ("features.11.block.3.0.weight", 96), options=_V3_BN),
}
