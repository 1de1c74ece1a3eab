"""MobileNetV4 (arXiv 2404.10518): universal inverted bottlenecks, a fused stem and, in the hybrids, Mobile MQA.

* ``mobilenet_v4_conv_small`` / ``_conv_medium`` / ``_conv_large``: convolution only, ReLU.
* ``mobilenet_v4_hybrid_medium`` (ReLU) / ``_hybrid_large`` (GELU): the conv models' last two stages interleaved with
  Mobile MQA blocks, and layer scale (init 1e-5) on every UIB and attention block.

Blocks. The Universal Inverted Bottleneck (UIB, §3.2) is an inverted bottleneck with two optional depthwise convs:
one before the 1×1 expansion ("DW K1", with BN and no activation) and one after it ("DW K2", BN + activation). Which
of them are present names the instantiation: IB = K2 only, ConvNext-like = K1 only, ExtraDW = both, FFN = neither.
The block strides on K2 when it has one, else on K1. The fused IB (stem of the medium and large models) is a k×k
conv to the expanded width then a linear 1×1 projection. Mobile MQA (§3.3) is batch norm, then multi-query
attention whose key and value are shared by all heads and spatially reduced by a stride-2 3×3 depthwise conv in the
second-to-last stage (:class:`mobilenet.layers.MultiQueryAttention`). Every block of the same input and output width
at stride 1 adds its input back. After the body: a 1×1 conv to 960, global pooling, a 1×1 conv to 1280 with BN and
the activation on the pooled map, then the classifier.

Layout followed: the reference code the paper links (tensorflow/models ``official/vision/modeling/backbones/
mobilenet.py``) as timm builds it (``timm/models/mobilenetv3.py`` ``_gen_mobilenet_v4``), because its parameter
counts are the published ones for the released weights and because ``mobilenet convert --from timm`` must load them
unchanged. Where the paper's tables and that code differ, the code is followed: Conv-S's first two "FusedIB" rows are
built as two conv + BN + ReLU layers each (a 3×3 strided conv then a 1×1 conv, the 1×1 with an activation), and the
published weights need that. Widths per row are the paper's "Expanded Dim" / "Output Dim"; each expansion is applied
as the ratio expanded / input to the block's actual (rounded) input, as in V3.

Width multiplier α (no α ≠ 1 MobileNetV4 is published): every table width × α rounded to a multiple of 8, the
expansion as a ratio of the rounded input, attention heads and key width unchanged, the 1280-wide pre-logits only
scaled when α > 1 (as V2 and V3).

Mult-Adds convention (:func:`mobilenet.cost.count_cost`): every conv and linear layer as in V1–V3, plus attention's
two matrix products, Q·Kᵀ (N·M·heads·key_dim) and A·V (N·M·heads·key_dim) with N query and M key positions. Not
counted: softmax, the 1/√d scale, batch norm, layer scale, activations, pooling and residual adds.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from torch import nn

from ..layers import ConvBNAct, LayerFn, LayerScale, MultiQueryAttention, make_divisible, round_channels
from .base import MobileNet, ModelArgs, document_args, lookup_published, resolve_args
from .registry import register_model


@dataclass(frozen=True)
class Conv:
    """A "Conv2D" row: k×k conv + BN + activation."""

    kernel: int
    out: int  # "Output Dim"
    stride: int


@dataclass(frozen=True)
class FusedIB:
    """A "FusedIB" row: k×k conv to ``expanded`` + BN + activation, then a linear 1×1 projection."""

    kernel: int
    expanded: int  # "Expanded Dim" at α = 1
    out: int
    stride: int


@dataclass(frozen=True)
class UIB:
    """A Universal Inverted Bottleneck row, in the paper's column order."""

    dw_k1: int  # "DW K1": depthwise kernel before the expansion, 0 for none (ConvNext-like, ExtraDW)
    dw_k2: int  # "DW K2": depthwise kernel after the expansion, 0 for none (IB, ExtraDW)
    expanded: int  # "Expanded Dim" at α = 1 (the 1×1 expansion's output)
    out: int  # "Output Dim"
    stride: int

    @property
    def kind(self) -> str:
        return {(0, 0): "FFN", (0, 1): "IB", (1, 0): "ConvNext", (1, 1): "ExtraDW"}[(self.dw_k1 > 0, self.dw_k2 > 0)]


@dataclass(frozen=True)
class MQA:
    """A "Mobile-MQA" row: attention with ``heads`` query heads and one shared key/value of ``key_dim``."""

    heads: int
    key_dim: int
    kv_stride: int  # spatial reduction of key and value (2 in the second-to-last stage, 1 in the last)
    out: int


@dataclass(frozen=True)
class Spec:
    stem: int  # Conv2D 3×3 / s2, output channels
    layers: tuple
    last_conv: int = 960  # Conv2D 1×1 before pooling
    head: int = 1280  # Conv2D 1×1 + BN + activation after pooling (pre-logits)


def _n(n: int, row) -> list:
    return [row] * n


# MNv4-Conv-S. Output side at 224 in the comments.
CONV_SMALL = Spec(stem=32, layers=(   # 112²
    Conv(3, 32, 2), Conv(1, 32, 1),   # 56²  the paper's "FusedIB 3×3, 32 → 32"; see the module docstring
    Conv(3, 96, 2), Conv(1, 64, 1),   # 28²  the paper's "FusedIB 3×3, 96 → 64"
    #   K1, K2, exp, out, s
    UIB(5, 5, 192, 96, 2),            # 14²  ExtraDW
    *_n(4, UIB(0, 3, 192, 96, 1)),    #      IB
    UIB(3, 0, 384, 96, 1),            #      ConvNext
    UIB(3, 3, 576, 128, 2),           # 7²   ExtraDW
    UIB(5, 5, 512, 128, 1),           #      ExtraDW
    UIB(0, 5, 512, 128, 1),           #      IB
    UIB(0, 5, 384, 128, 1),           #      IB
    *_n(2, UIB(0, 3, 512, 128, 1)),   #      IB
))

# MNv4-Conv-M.
CONV_MEDIUM = Spec(stem=32, layers=(  # 112²
    FusedIB(3, 128, 48, 2),           # 56²
    UIB(3, 5, 192, 80, 2),            # 28²  ExtraDW
    UIB(3, 3, 160, 80, 1),
    UIB(3, 5, 480, 160, 2),           # 14²  ExtraDW
    *_n(2, UIB(3, 3, 640, 160, 1)),
    UIB(3, 5, 640, 160, 1),
    UIB(3, 3, 640, 160, 1),
    UIB(3, 0, 640, 160, 1),           #      ConvNext
    UIB(0, 0, 320, 160, 1),           #      FFN
    UIB(3, 0, 640, 160, 1),           #      ConvNext
    UIB(5, 5, 960, 256, 2),           # 7²   ExtraDW
    UIB(5, 5, 1024, 256, 1),
    *_n(2, UIB(3, 5, 1024, 256, 1)),
    UIB(0, 0, 1024, 256, 1),          #      FFN
    UIB(3, 0, 1024, 256, 1),          #      ConvNext
    UIB(3, 5, 512, 256, 1),
    UIB(5, 5, 1024, 256, 1),
    *_n(2, UIB(0, 0, 1024, 256, 1)),  #      FFN
    UIB(5, 0, 512, 256, 1),           #      ConvNext
))

# MNv4-Conv-L.
CONV_LARGE = Spec(stem=24, layers=(   # 112²
    FusedIB(3, 96, 48, 2),            # 56²
    UIB(3, 5, 192, 96, 2),            # 28²  ExtraDW
    UIB(3, 3, 384, 96, 1),
    UIB(3, 5, 384, 192, 2),           # 14²  ExtraDW
    *_n(3, UIB(3, 3, 768, 192, 1)),
    UIB(3, 5, 768, 192, 1),
    *_n(5, UIB(5, 3, 768, 192, 1)),
    UIB(3, 0, 768, 192, 1),           #      ConvNext
    UIB(5, 5, 768, 512, 2),           # 7²   ExtraDW
    *_n(3, UIB(5, 5, 2048, 512, 1)),
    UIB(5, 0, 2048, 512, 1),          #      ConvNext
    UIB(5, 3, 2048, 512, 1),
    *_n(2, UIB(5, 0, 2048, 512, 1)),
    UIB(5, 3, 2048, 512, 1),
    UIB(5, 5, 2048, 512, 1),
    *_n(3, UIB(5, 0, 2048, 512, 1)),
))

# MNv4-Hybrid-M: Conv-M's stages with Mobile MQA (4 heads of 64) in the last two.
HYBRID_MEDIUM = Spec(stem=32, layers=(
    FusedIB(3, 128, 48, 2),           # 56²
    UIB(3, 5, 192, 80, 2),            # 28²
    UIB(3, 3, 160, 80, 1),
    UIB(3, 5, 480, 160, 2),           # 14²
    UIB(0, 0, 320, 160, 1),           #      FFN
    UIB(3, 3, 640, 160, 1),
    UIB(3, 5, 640, 160, 1),
    MQA(4, 64, 2, 160), UIB(3, 3, 640, 160, 1),
    MQA(4, 64, 2, 160), UIB(3, 0, 640, 160, 1),
    MQA(4, 64, 2, 160), UIB(3, 3, 640, 160, 1),
    MQA(4, 64, 2, 160), UIB(3, 0, 640, 160, 1),
    UIB(5, 5, 960, 256, 2),           # 7²
    UIB(5, 5, 1024, 256, 1),
    *_n(2, UIB(3, 5, 1024, 256, 1)),
    UIB(0, 0, 512, 256, 1),
    UIB(3, 5, 512, 256, 1),
    UIB(0, 0, 512, 256, 1),
    UIB(0, 0, 1024, 256, 1),
    MQA(4, 64, 1, 256), UIB(3, 0, 1024, 256, 1),
    MQA(4, 64, 1, 256), UIB(5, 5, 1024, 256, 1),
    MQA(4, 64, 1, 256), UIB(5, 0, 1024, 256, 1),
    MQA(4, 64, 1, 256), UIB(5, 0, 1024, 256, 1),
))

# MNv4-Hybrid-L: Conv-L's stages with Mobile MQA (8 heads; keys of 48, then 64) in the last two; GELU.
HYBRID_LARGE = Spec(stem=24, layers=(
    FusedIB(3, 96, 48, 2),            # 56²
    UIB(3, 5, 192, 96, 2),            # 28²
    UIB(3, 3, 384, 96, 1),
    UIB(3, 5, 384, 192, 2),           # 14²
    *_n(3, UIB(3, 3, 768, 192, 1)),
    UIB(3, 5, 768, 192, 1),
    *_n(2, UIB(5, 3, 768, 192, 1)),
    MQA(8, 48, 2, 192), UIB(5, 3, 768, 192, 1),
    MQA(8, 48, 2, 192), UIB(5, 3, 768, 192, 1),
    MQA(8, 48, 2, 192), UIB(5, 3, 768, 192, 1),
    MQA(8, 48, 2, 192), UIB(3, 0, 768, 192, 1),
    UIB(5, 5, 768, 512, 2),           # 7²
    *_n(3, UIB(5, 5, 2048, 512, 1)),
    UIB(5, 0, 2048, 512, 1),
    UIB(5, 3, 2048, 512, 1),
    *_n(2, UIB(5, 0, 2048, 512, 1)),
    UIB(5, 3, 2048, 512, 1),
    UIB(5, 5, 2048, 512, 1),
    MQA(8, 64, 1, 512), UIB(5, 0, 2048, 512, 1),
    MQA(8, 64, 1, 512), UIB(5, 0, 2048, 512, 1),
    MQA(8, 64, 1, 512), UIB(5, 0, 2048, 512, 1),
    MQA(8, 64, 1, 512), UIB(5, 0, 2048, 512, 1),
))

# Published ImageNet numbers (../shared/papers.md §5): (alpha, resolution) -> (top-1 %, Mult-Adds M, params M).
# The paper prints Conv-S as 73.8 % / 0.2G / 3.8M (a model's ``published`` attribute). timm's released weights add a
# top-1 and a parameter count per model but no Mult-Adds (None); with the paper's row they form the registry's
# published table, which search interpolates between. Hybrid-M has no published top-1 in papers.md.
PAPER_CONV_SMALL = {(1.0, 224): (73.8, 200, 3.8)}
PUBLISHED_CONV_SMALL = {**PAPER_CONV_SMALL}
PUBLISHED_CONV_MEDIUM = {(1.0, 224): (79.094, None, 9.72)}
PUBLISHED_CONV_LARGE = {(1.0, 384): (82.952, None, 32.59)}
PUBLISHED_HYBRID_MEDIUM: dict = {}
PUBLISHED_HYBRID_LARGE = {(1.0, 384): (83.8, None, 37.76)}


class UniversalInvertedBottleneck(nn.Module):
    """UIB (§3.2): [k1×k1 dw + BN] → 1×1 expand + BN + act → [k2×k2 dw + BN + act] → 1×1 project + BN
    → [layer scale] → + input when the shapes allow."""

    def __init__(self, in_chs: int, mid_chs: int, out_chs: int, row: UIB, act_layer: LayerFn,
                 norm_layer: LayerFn, layer_scale: float | None):
        super().__init__()
        identity = nn.Identity
        self.dw_start = (ConvBNAct(in_chs, in_chs, row.dw_k1, 1 if row.dw_k2 else row.stride, groups=in_chs,
                                   norm_layer=norm_layer, act_layer=None) if row.dw_k1 else identity())
        self.expand = ConvBNAct(in_chs, mid_chs, 1, norm_layer=norm_layer, act_layer=act_layer)
        self.dw_mid = (ConvBNAct(mid_chs, mid_chs, row.dw_k2, row.stride, groups=mid_chs, norm_layer=norm_layer,
                                 act_layer=act_layer) if row.dw_k2 else identity())
        self.project = ConvBNAct(mid_chs, out_chs, 1, norm_layer=norm_layer, act_layer=None)
        self.layer_scale = LayerScale(out_chs, layer_scale) if layer_scale is not None else identity()
        self.use_residual = row.stride == 1 and in_chs == out_chs
        self.in_chs, self.out_chs, self.stride, self.kind = in_chs, out_chs, row.stride, row.kind

    def forward(self, x):
        out = self.layer_scale(self.project(self.dw_mid(self.expand(self.dw_start(x)))))
        return x + out if self.use_residual else out


class FusedInvertedBottleneck(nn.Module):
    """Fused IB: k×k conv to the expanded width + BN + act, then a linear 1×1 projection + BN."""

    def __init__(self, in_chs: int, mid_chs: int, out_chs: int, row: FusedIB, act_layer: LayerFn,
                 norm_layer: LayerFn):
        super().__init__()
        self.expand = ConvBNAct(in_chs, mid_chs, row.kernel, row.stride, norm_layer=norm_layer, act_layer=act_layer)
        self.project = ConvBNAct(mid_chs, out_chs, 1, norm_layer=norm_layer, act_layer=None)
        self.use_residual = row.stride == 1 and in_chs == out_chs
        self.in_chs, self.out_chs, self.stride = in_chs, out_chs, row.stride

    def forward(self, x):
        out = self.project(self.expand(x))
        return x + out if self.use_residual else out


class MobileMQA(nn.Module):
    """Mobile MQA block (§3.3): BN → multi-query attention → [layer scale] → + input."""

    def __init__(self, chs: int, row: MQA, norm_layer: LayerFn, layer_scale: float | None):
        super().__init__()
        self.norm = norm_layer(chs)
        self.attn = MultiQueryAttention(chs, chs, row.heads, row.key_dim, row.kv_stride, norm_layer=norm_layer)
        self.layer_scale = LayerScale(chs, layer_scale) if layer_scale is not None else nn.Identity()
        self.in_chs = self.out_chs = chs
        self.stride = 1  # the K/V reduction is internal: the block keeps its input's side

    def forward(self, x):
        return x + self.layer_scale(self.attn(self.norm(x)))


class MobileNetV4(MobileNet):
    """:class:`MobileNet` with V4's head: pooling, then a 1×1 conv + BN + activation on the pooled map."""

    def __init__(self, features: nn.Sequential, num_features: int, args: ModelArgs, name: str, head_chs: int,
                 act_layer: LayerFn, norm_layer: LayerFn, published: dict | None):
        super().__init__(features, num_features, args, name, published=published)
        self.head = ConvBNAct(num_features, head_chs, 1, norm_layer=norm_layer, act_layer=act_layer)
        self.num_features = head_chs
        self.classifier = nn.Linear(head_chs, args.num_classes)
        self._init_weights()

    def forward_head(self, x, pre_logits: bool = False):
        """Pools a feature map, runs the 1×1 head conv on it and classifies; ``pre_logits=True`` stops before."""
        x = self.flatten(self.head(self.global_pool(x)))
        return x if pre_logits else self.classifier(self.dropout(x))


def _body(spec: Spec, args: ModelArgs, act_layer: LayerFn, norm_layer: LayerFn, layer_scale: float | None):
    """The feature sequence: stem, one child per table row, the last 1×1 conv; returns it and its width."""
    def chs(c: int) -> int:
        return round_channels(c, args.alpha, args.rounding)

    in_chs, table_in = chs(spec.stem), spec.stem
    layers = [ConvBNAct(args.in_chans, in_chs, 3, 2, norm_layer=norm_layer, act_layer=act_layer)]
    for row in spec.layers:
        out = in_chs if isinstance(row, MQA) else chs(row.out)
        if isinstance(row, Conv):
            block = ConvBNAct(in_chs, out, row.kernel, row.stride, norm_layer=norm_layer, act_layer=act_layer)
        elif isinstance(row, MQA):
            block = MobileMQA(in_chs, row, norm_layer, layer_scale)
        else:
            # The expansion is a ratio of the block's actual (rounded) input, as in V3 and the reference code.
            mid = make_divisible(in_chs * row.expanded / table_in, 8)
            if isinstance(row, FusedIB):
                block = FusedInvertedBottleneck(in_chs, mid, out, row, act_layer, norm_layer)
            else:
                block = UniversalInvertedBottleneck(in_chs, mid, out, row, act_layer, norm_layer, layer_scale)
        layers.append(block)
        in_chs, table_in = out, row.out
    last = chs(spec.last_conv)
    layers.append(ConvBNAct(in_chs, last, 1, norm_layer=norm_layer, act_layer=act_layer))
    return nn.Sequential(OrderedDict((str(i), m) for i, m in enumerate(layers))), last


def _build(name: str, spec: Spec, paper: dict, *, act_layer: LayerFn = nn.ReLU,
           norm_layer: LayerFn = nn.BatchNorm2d, layer_scale: float | None = None, **kwargs) -> MobileNetV4:
    args = resolve_args(**{"dropout": 0.2, **kwargs})
    features, last = _body(spec, args, act_layer, norm_layer, layer_scale)
    head = round_channels(spec.head, max(1.0, args.alpha), args.rounding)
    return MobileNetV4(features, last, args, name, head, act_layer, norm_layer, lookup_published(paper, args))


_doc = document_args(
    alpha="every table width × α, rounded to a multiple of 8; attention heads and key width unchanged; the 1280-wide "
          "pre-logits only when α > 1",
    dropout="default 0.2",
    rounding='default ``"divisible8"``',
    act_layer="activation of every layer (default ReLU; GELU for Hybrid-L)",
    norm_layer="norm of every layer (default BatchNorm2d)",
)


@register_model(published=PUBLISHED_CONV_SMALL)
@_doc
def mobilenet_v4_conv_small(**kwargs) -> MobileNetV4:
    """MNv4-Conv-S: 73.8 % top-1 at 224, 3.8M params, 0.2G Mult-Adds (paper)."""
    return _build("mobilenet_v4_conv_small", CONV_SMALL, PAPER_CONV_SMALL, **kwargs)


@register_model(published=PUBLISHED_CONV_MEDIUM)
@_doc
def mobilenet_v4_conv_medium(**kwargs) -> MobileNetV4:
    """MNv4-Conv-M: fused IB stem and UIB blocks; 9.72M params (timm)."""
    return _build("mobilenet_v4_conv_medium", CONV_MEDIUM, {}, **kwargs)


@register_model(published=PUBLISHED_CONV_LARGE)
@_doc
def mobilenet_v4_conv_large(**kwargs) -> MobileNetV4:
    """MNv4-Conv-L: 32.59M params (timm), published at 384×384."""
    return _build("mobilenet_v4_conv_large", CONV_LARGE, {}, **kwargs)


@register_model(published=PUBLISHED_HYBRID_MEDIUM)
@_doc
def mobilenet_v4_hybrid_medium(**kwargs) -> MobileNetV4:
    """MNv4-Hybrid-M: Conv-M with Mobile MQA and layer scale; 11.07M params (timm)."""
    return _build("mobilenet_v4_hybrid_medium", HYBRID_MEDIUM, {}, layer_scale=1e-5, **kwargs)


@register_model(published=PUBLISHED_HYBRID_LARGE)
@_doc
def mobilenet_v4_hybrid_large(**kwargs) -> MobileNetV4:
    """MNv4-Hybrid-L: Conv-L with Mobile MQA, layer scale and GELU; 37.76M params (timm), published at 384×384."""
    return _build("mobilenet_v4_hybrid_large", HYBRID_LARGE, {}, act_layer=nn.GELU,
                  layer_scale=1e-5, **kwargs)
