"""MobileNetV3 (arXiv 1905.02244): V2's inverted residuals with squeeze-and-excite, hard-swish and a cheaper head.

* ``mobilenet_v3_large``: Table 1, 5,483,032 params at α = 1 (torchvision's published count).
* ``mobilenet_v3_small``: Table 2 with the final revision's 1024-wide head, 2,542,856 params.
* ``mobilenet_v3_large_minimal`` / ``mobilenet_v3_small_minimal``: the TF-Slim "minimalistic" variants, which keep
  every layer's width but drop squeeze-and-excite, use ReLU instead of hard-swish and 3×3 kernels only.

Layout (what the published parameter counts require): squeeze-and-excite after the depthwise conv with a squeeze width
of ``make_divisible(expansion / 4, 8)``, two 1×1 convs with bias, ReLU inside and a hard-sigmoid gate; no SE on the
last 1×1 conv (Table 2 marks one on V3-Small's 576-wide conv, but the published 2,542,856 params exclude it); the
last 1×1 conv, pooling, then a Linear to 1280 (Large) / 1024 (Small) with hard-swish ("conv2d 1x1, NBN", no BN),
dropout and the classifier. BN uses eps 0.001 and momentum 0.01 (TF's decay 0.99).

Width multiplier α (the TF-Slim and Keras rules, which Appendix A's Table 9 was measured with): the stem, output and
last-conv widths are ``make_divisible(α·c, 8)``; each expansion is the table's ratio exp / input applied to the
block's actual rounded input, ``make_divisible(in·exp/in_table, 8)`` (torchvision rounds ``α·exp`` instead, which only
differs at α ≠ 1 and gives 9 % fewer Mult-Adds at α = 0.75); the pre-logits width (1280 / 1024) is scaled only when
α > 1, as in V2 and Keras. With these rules 16 of Table 9's 19 rows count to its printed Mult-Adds (rounded or
truncated, as the paper prints), the other three within 1.4 %, and 17 of 19 rows match its printed params: Large
1.25 counts 8.26M params, printed 7.5, as if its head stayed 1280 wide (Small 1.25's printed 3.6M needs the scaled
head), and Large 0.35 counts 2.13M, printed 2.2.

Mult-Adds convention (what :func:`mobilenet.cost.count_cost` counts, V1 paper eq. 2 and 4): the multiply-accumulates
of every conv (k·k·(M/groups)·N·D_F·D_F) and every linear layer (M·N); the squeeze-and-excite convs run on the pooled
1×1 map and count as linear layers (M·N each). Not counted: batch norm, activations (hard-swish, hard-sigmoid, ReLU),
pooling, biases, residual adds and SE's channel-wise multiply. At 224×224 and 1000 classes this gives 216,589,760 for
Large (paper: 219M in Table 3, -1.1 %; 217M in Table 9) and 56,510,400 for Small (paper: 56M in Table 3, +0.9 %; 57M
in Table 9).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from torch import nn

from ..layers import ConvBNAct, InvertedResidual, LayerFn, SqueezeExcite, make_divisible, round_channels
from .base import MobileNet, document_args, lookup_published, resolve_args
from .registry import register_model


@dataclass(frozen=True)
class Bneck:
    """One ``bneck`` row of Tables 1 and 2, in the paper's column order (channel counts at α = 1)."""

    kernel: int  # depthwise kernel size, the "bneck, k×k" operator (3 or 5)
    exp: int  # "exp size": channels after the 1×1 expansion (no expansion conv when equal to the input)
    out: int  # "#out": output channels of the linear 1×1 projection
    se: bool  # "SE": squeeze-and-excite after the depthwise conv
    nl: str  # "NL": non-linearity of the expansion and depthwise convs, "RE" (ReLU) or "HS" (hard-swish)
    stride: int  # "s": stride of the depthwise conv


@dataclass(frozen=True)
class Spec:
    """A whole V3 network: stem, bneck rows, the last 1×1 conv and the pre-logits width."""

    stem: int  # "conv2d" 3×3 / s2 with hard-swish, output channels
    blocks: tuple[Bneck, ...]
    last_conv: int  # "conv2d, 1x1" with BN and hard-swish, before pooling
    head: int  # "conv2d 1x1, NBN" after pooling: a Linear with hard-swish (pre-logits)


# Table 1 of arXiv 1905.02244, MobileNetV3-Large. Output side at 224 in the comment.
LARGE = Spec(
    stem=16,  # 112² × 16
    blocks=(
        #     k, exp, out,  SE,    NL,   s     output
        Bneck(3, 16, 16, False, "RE", 1),   # 112² × 16
        Bneck(3, 64, 24, False, "RE", 2),   # 56² × 24
        Bneck(3, 72, 24, False, "RE", 1),   # 56² × 24
        Bneck(5, 72, 40, True, "RE", 2),    # 28² × 40
        Bneck(5, 120, 40, True, "RE", 1),   # 28² × 40
        Bneck(5, 120, 40, True, "RE", 1),   # 28² × 40
        Bneck(3, 240, 80, False, "HS", 2),  # 14² × 80
        Bneck(3, 200, 80, False, "HS", 1),  # 14² × 80
        Bneck(3, 184, 80, False, "HS", 1),  # 14² × 80
        Bneck(3, 184, 80, False, "HS", 1),  # 14² × 80
        Bneck(3, 480, 112, True, "HS", 1),  # 14² × 112
        Bneck(3, 672, 112, True, "HS", 1),  # 14² × 112
        Bneck(5, 672, 160, True, "HS", 2),  # 7² × 160
        Bneck(5, 960, 160, True, "HS", 1),  # 7² × 160
        Bneck(5, 960, 160, True, "HS", 1),  # 7² × 160
    ),
    last_conv=960,  # 7² × 960, then pool 7×7
    head=1280,  # 1² × 1280
)

# Table 2 of arXiv 1905.02244 (final revision), MobileNetV3-Small.
SMALL = Spec(
    stem=16,  # 112² × 16
    blocks=(
        #     k, exp, out,  SE,    NL,   s     output
        Bneck(3, 16, 16, True, "RE", 2),    # 56² × 16
        Bneck(3, 72, 24, False, "RE", 2),   # 28² × 24
        Bneck(3, 88, 24, False, "RE", 1),   # 28² × 24
        Bneck(5, 96, 40, True, "HS", 2),    # 14² × 40
        Bneck(5, 240, 40, True, "HS", 1),   # 14² × 40
        Bneck(5, 240, 40, True, "HS", 1),   # 14² × 40
        Bneck(5, 120, 48, True, "HS", 1),   # 14² × 48
        Bneck(5, 144, 48, True, "HS", 1),   # 14² × 48
        Bneck(5, 288, 96, True, "HS", 2),   # 7² × 96
        Bneck(5, 576, 96, True, "HS", 1),   # 7² × 96
        Bneck(5, 576, 96, True, "HS", 1),   # 7² × 96
    ),
    last_conv=576,  # 7² × 576 (the table marks SE here; the published counts have none)
    head=1024,  # 1² × 1024 (1280 in earlier revisions of the paper)
)

ACTIVATIONS: dict[str, type[nn.Module]] = {"RE": nn.ReLU, "HS": nn.Hardswish}

# Appendix A, Table 9: (alpha, resolution) -> (top-1 %, Mult-Adds M, params M).
PUBLISHED_LARGE = {
    (1.25, 224): (76.6, 356, 7.5),
    (1.0, 224): (75.2, 217, 5.4),
    (0.75, 224): (73.3, 155, 4.0),
    (0.5, 224): (68.8, 69, 2.6),
    (0.35, 224): (64.2, 40, 2.2),
    (1.0, 256): (76.0, 282, 5.4),
    (1.0, 192): (73.7, 160, 5.4),
    (1.0, 160): (71.7, 112, 5.4),
    (1.0, 128): (68.4, 73, 5.4),
    (1.0, 96): (63.3, 43, 5.4),
}
PUBLISHED_SMALL = {
    (1.25, 224): (70.4, 91, 3.6),
    (1.0, 224): (67.5, 57, 2.5),
    (0.75, 224): (65.4, 44, 2.0),
    (0.5, 224): (58.0, 21, 1.6),
    (0.35, 224): (49.8, 12, 1.4),
    (1.0, 256): (68.5, 74, 2.5),
    (1.0, 160): (62.8, 30, 2.5),
    (1.0, 128): (57.3, 20, 2.5),
    (1.0, 96): (51.7, 12, 2.5),
}
# TF-Slim's checkpoint table (tensorflow/models research/slim/nets/mobilenet/README.md) for the minimalistic Large;
# its Small row describes the earlier 1280-wide head, so the 1024-head Small minimalistic has no published row.
PUBLISHED_LARGE_MINIMAL = {(1.0, 224): (72.3, 209, 3.9)}

# TF's BatchNormalization defaults as the reference checkpoints were trained: eps 1e-3, moving-average decay 0.99.
V3_BATCH_NORM = partial(nn.BatchNorm2d, eps=0.001, momentum=0.01)


def minimal(spec: Spec) -> Spec:
    """The "minimalistic" variant of a spec: same widths, no squeeze-and-excite, ReLU only, 3×3 kernels only."""
    blocks = tuple(Bneck(3, b.exp, b.out, False, "RE", b.stride) for b in spec.blocks)
    return Spec(spec.stem, blocks, spec.last_conv, spec.head)


def _build(
    name: str,
    spec: Spec,
    published: dict,
    *,
    hard_swish: bool = True,
    norm_layer: LayerFn = V3_BATCH_NORM,
    padding: str = "symmetric",
    **kwargs,
) -> MobileNet:
    args = resolve_args(**{"dropout": 0.2, **kwargs})
    # The stem, last conv and head use hard-swish in the full model and ReLU in the minimalistic one.
    act = nn.Hardswish if hard_swish else nn.ReLU

    def chs(c: int) -> int:
        return round_channels(c, args.alpha, args.rounding)

    in_chs, table_in = chs(spec.stem), spec.stem
    features: list[nn.Module] = [ConvBNAct(args.in_chans, in_chs, 3, 2, norm_layer=norm_layer, act_layer=act,
                                           padding=padding)]
    for row in spec.blocks:
        # The expansion is a ratio of the block's actual (rounded) input, as in TF-Slim and Keras.
        mid = round_channels(in_chs * row.exp / table_in, 1.0, args.rounding)
        out = chs(row.out)
        se = _squeeze_excite if row.se else None
        features.append(InvertedResidual(in_chs, mid, out, row.stride, row.kernel, norm_layer=norm_layer,
                                         act_layer=ACTIVATIONS[row.nl], se_layer=se, padding=padding))
        in_chs, table_in = out, row.out
    last = chs(spec.last_conv)
    features.append(ConvBNAct(in_chs, last, 1, norm_layer=norm_layer, act_layer=act))
    head = round_channels(spec.head, max(1.0, args.alpha), args.rounding)
    return MobileNet(
        nn.Sequential(*features), last, args, name, head_chs=head, head_act=act,
        published=lookup_published(published, args),
    )


def _squeeze_excite(chs: int) -> SqueezeExcite:
    # §5.3: the SE bottleneck is a quarter of the expansion width, rounded to a multiple of 8 like every width.
    return SqueezeExcite(chs, make_divisible(chs / 4, 8), act_layer=nn.ReLU, gate_layer=nn.Hardsigmoid)


_doc = document_args(
    alpha="every table width × α, rounded to a multiple of 8; the pre-logits width only when α > 1",
    dropout="between the pre-logits layer and the classifier (default 0.2)",
    rounding='default ``"divisible8"``',
    norm_layer="the norm of every conv (default BatchNorm2d with eps 0.001, momentum 0.01)",
    padding='``"symmetric"`` (default) or ``"same"`` to pad stride-2 layers as TensorFlow does',
)


@register_model(published=PUBLISHED_LARGE)
@_doc
def mobilenet_v3_large(**kwargs) -> MobileNet:
    """MobileNetV3-Large, Table 1 of arXiv 1905.02244: 217M Mult-Adds, 5.4M params at α = 1, 224×224."""
    return _build("mobilenet_v3_large", LARGE, PUBLISHED_LARGE, **kwargs)


@register_model(published=PUBLISHED_SMALL)
@_doc
def mobilenet_v3_small(**kwargs) -> MobileNet:
    """MobileNetV3-Small, Table 2 of arXiv 1905.02244: 57M Mult-Adds, 2.5M params at α = 1, 224×224."""
    return _build("mobilenet_v3_small", SMALL, PUBLISHED_SMALL, **kwargs)


@register_model(published=PUBLISHED_LARGE_MINIMAL)
@_doc
def mobilenet_v3_large_minimal(**kwargs) -> MobileNet:
    """MobileNetV3-Large minimalistic (TF-Slim): no SE, ReLU only, 3×3 kernels; 209M Mult-Adds, 3.9M params."""
    return _build("mobilenet_v3_large_minimal", minimal(LARGE), PUBLISHED_LARGE_MINIMAL, hard_swish=False, **kwargs)


@register_model
@_doc
def mobilenet_v3_small_minimal(**kwargs) -> MobileNet:
    """MobileNetV3-Small minimalistic: Table 2's widths and 1024 head, no SE, ReLU only, 3×3 kernels."""
    return _build("mobilenet_v3_small_minimal", minimal(SMALL), {}, hard_swish=False, **kwargs)
