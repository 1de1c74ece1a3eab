"""timm's MobileNet state dicts (``mobilenetv1_100``, ``mobilenetv2_*``, ``mobilenetv3_large_100/small_100``, the
``tf_`` ports of V3, and ``mobilenetv4_conv_small/medium/large``, ``mobilenetv4_hybrid_medium/large``).

Layouts (timm/models/efficientnet.py, mobilenetv3.py, _efficientnet_blocks.py): ``conv_stem`` + ``bn1``, then
``blocks.<stage>.<index>``, one stage per row of the paper's table, each block one of

* DepthwiseSeparableConv: ``conv_dw``, ``bn1``, [``se.conv_reduce``, ``se.conv_expand``], ``conv_pw``, ``bn2``
  (V1's layers, and the first, unexpanded block of V2 and V3);
* InvertedResidual: ``conv_pw``, ``bn1``, ``conv_dw``, ``bn2``, [``se``], ``conv_pwl``, ``bn3``;
* ConvBnAct: ``conv``, ``bn1`` (V3's last 1×1 conv, as the last stage);

then V2's ``conv_head`` + ``bn2``, or V3's ``conv_head`` (a 1×1 conv with bias after pooling, our ``head.0``); then
``classifier``. BN layers are BatchNormAct2d, whose tensors are BatchNorm2d's. timm's own V1/V2/V3 use BN eps 1e-5
and symmetric padding, V1 and V2 ReLU6; the ``tf_`` V3 ports use TF "same" padding and eps 1e-3 with inputs in [-1, 1].

MobileNetV4 (the same ``conv_stem`` / ``bn1`` / ``blocks.<stage>.<index>`` frame, stages split at each stride-2 row,
the last 1×1 conv a stage of its own): ConvBnAct ``conv``, ``bn1``; EdgeResidual (fused IB) ``conv_exp``, ``bn1``,
``conv_pwl``, ``bn2``; UniversalInvertedResidual ``dw_start``, ``pw_exp``, ``dw_mid``, ``pw_proj`` (each a
ConvNormAct: ``conv``, ``bn``) and ``layer_scale.gamma``; MobileAttention ``norm``, ``attn.query.proj``,
``attn.key``/``attn.value`` (``down_conv``, ``norm``, ``proj``), ``attn.output.proj``, ``layer_scale.gamma``; after
pooling ``conv_head`` (no bias) and ``norm_head``.
"""

from __future__ import annotations

from functools import partial

from torch import nn

from ..layers import ConvBNAct, DepthwiseSeparable, LayerScale
from ..models.mobilenet_v4 import FusedInvertedBottleneck, MobileMQA, UniversalInvertedBottleneck
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


def _uib(p: str, q: str, block: UniversalInvertedBottleneck) -> list[Link]:
    links = []
    for ours, theirs in (("dw_start", "dw_start"), ("expand", "pw_exp"), ("dw_mid", "dw_mid"), ("project", "pw_proj")):
        part = getattr(block, ours)
        if isinstance(part, ConvBNAct):
            links += conv_bn(f"{p}.{ours}", f"{q}.{theirs}.conv", f"{q}.{theirs}.bn", depthwise=part.conv.groups > 1)
    return links + _layer_scale(p, q, block)


def _mqa(p: str, q: str, block: MobileMQA) -> list[Link]:
    links = [Link(f"{p}.norm", f"{q}.norm", "bn"), Link(f"{p}.attn.query.proj", f"{q}.attn.query.proj", "conv")]
    for kv in ("key", "value"):
        if hasattr(getattr(block.attn, kv), "down"):
            links += conv_bn(f"{p}.attn.{kv}.down", f"{q}.attn.{kv}.down_conv", f"{q}.attn.{kv}.norm", depthwise=True)
        links.append(Link(f"{p}.attn.{kv}.proj", f"{q}.attn.{kv}.proj", "conv"))
    return links + [Link(f"{p}.attn.output.proj", f"{q}.attn.output.proj", "conv")] + _layer_scale(p, q, block)


def _layer_scale(p: str, q: str, block: nn.Module) -> list[Link]:
    return [Link(f"{p}.layer_scale", f"{q}.layer_scale", "layer_scale")] if isinstance(block.layer_scale,
                                                                                        LayerScale) else []


def _v4_links(model: nn.Module, stages: list[int]) -> list[Link]:
    """MobileNetV4: stem, one timm block per row of our table, the last 1×1 conv, the pooled head conv."""
    body = list(model.features)[1:]
    links = conv_bn("features.0", "conv_stem", "bn1")
    for n, (block, (s, j)) in enumerate(zip(body, stage_index(stages, len(body))), start=1):
        p, q = f"features.{n}", f"blocks.{s}.{j}"
        if isinstance(block, ConvBNAct):
            links += conv_bn(p, f"{q}.conv", f"{q}.bn1")
        elif isinstance(block, FusedInvertedBottleneck):
            links += conv_bn(f"{p}.expand", f"{q}.conv_exp", f"{q}.bn1") + conv_bn(f"{p}.project", f"{q}.conv_pwl",
                                                                                    f"{q}.bn2")
        elif isinstance(block, UniversalInvertedBottleneck):
            links += _uib(p, q, block)
        else:
            assert isinstance(block, MobileMQA)
            links += _mqa(p, q, block)
    return links + conv_bn("head", "conv_head", "norm_head") + [Link("classifier", "classifier", "linear")]


# Blocks per stage of timm's MobileNetV4 (a stage starts at each stride-2 row; the last 1×1 conv is the last stage).
V4_STAGES = {
    "conv_small": [2, 2, 6, 6, 1],
    "conv_medium": [1, 2, 8, 11, 1],
    "conv_large": [1, 2, 11, 13, 1],
    "hybrid_medium": [1, 2, 12, 16, 1],
    "hybrid_large": [1, 2, 15, 18, 1],
}


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
    # MobileNetV4 exists in timm at α = 1 only, with PyTorch's BN eps and symmetric padding (our defaults).
    **{f"mobilenetv4_{variant}": SourceModel(f"mobilenetv4_{variant}", model=f"mobilenet_v4_{variant}", alpha=1.0,
                                             links=partial(_v4_links, stages=stages), classifier="classifier.weight",
                                             width_probe=("conv_head.weight", 1280))
       for variant, stages in V4_STAGES.items()},
}
