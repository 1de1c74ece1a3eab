"""Building blocks shared by every MobileNet: channel rounding, conv+norm+act, and the three block types.

Every conv in every model goes through :class:`ConvBNAct`, so BN folding, quantization and the cost counter only
ever have to understand one kind of module.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import nn

from .errors import MobileNetError

# Named channel-rounding policies and where each comes from.
ROUNDING_POLICIES = {
    # TF-Slim mobilenet_v1.py: depth = max(int(d * depth_multiplier), min_depth=8)
    "tf-slim": "max(int(alpha * c), 8), the reference MobileNetV1 code",
    # keras.applications.MobileNet: filters = int(filters * alpha)
    "keras": "int(alpha * c), Keras' MobileNet",
    # V2/V3 reference code (_make_divisible): nearest multiple of 8, never below 90 % of alpha * c
    "divisible8": "nearest multiple of 8, at least 8 and never below 90% of alpha * c (V2/V3 reference code)",
}

LayerFn = Callable[..., nn.Module]


def is_depthwise(module: nn.Module) -> bool:
    """A conv whose every input channel has its own filter (groups == in_channels > 1): the depthwise half of a
    separable layer. Cost counting, weight decay and weight conversion all decide it here."""
    return isinstance(module, nn.Conv2d) and module.groups > 1 and module.groups == module.in_channels


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None, round_limit: float = 0.9) -> int:
    """Rounds ``value`` to the nearest multiple of ``divisor``, never below ``round_limit`` of it.

    Hardware kernels and the V2/V3 reference checkpoints assume channel counts divisible by 8; the 90 % floor keeps
    rounding from removing more than a tenth of a layer's width.
    """
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < round_limit * value:
        rounded += divisor
    return rounded


def round_channels(channels: int, alpha: float = 1.0, policy: str = "divisible8") -> int:
    """Scales a layer's channel count by the width multiplier α under a named rounding policy.

    Args:
        channels: the channel count printed in the paper's table (α = 1).
        alpha: the width multiplier α > 0.
        policy: one of ``ROUNDING_POLICIES`` (``"tf-slim"``, ``"keras"``, ``"divisible8"``).
    """
    if policy == "tf-slim":
        return max(int(channels * alpha), 8)
    if policy == "keras":
        return max(int(channels * alpha), 1)
    if policy == "divisible8":
        return make_divisible(channels * alpha, 8)
    raise MobileNetError(f"unknown rounding policy {policy!r}; expected one of {sorted(ROUNDING_POLICIES)}")


class SamePad2d(nn.Module):
    """Zero-pads an input the way TensorFlow's ``padding="same"`` does, for a conv of the given kernel and stride.

    TF pads a side ``n`` by ``max((ceil(n / s) - 1) * s + (k - 1) * d + 1 - n, 0)`` in total and puts the odd pixel
    at the bottom/right, so at even sides a stride-2 3×3 conv gets (0, 1) instead of PyTorch's symmetric (1, 1).
    The amount depends on the input size, so it is computed at every call: the model stays exact at any resolution.
    Weights trained in Keras/TF-Slim need it; run with symmetric padding they shift every feature map by a pixel.
    """

    def __init__(self, kernel_size: int, stride: int, dilation: int = 1):
        super().__init__()
        self.kernel_size, self.stride, self.dilation = kernel_size, stride, dilation

    def pads(self, height: int, width: int) -> tuple[int, int, int, int]:
        """(left, right, top, bottom) zero padding for an input of ``height`` × ``width``."""
        def total(n: int) -> int:
            return max((-(-n // self.stride) - 1) * self.stride + (self.kernel_size - 1) * self.dilation + 1 - n, 0)
        h, w = total(height), total(width)
        return w // 2, w - w // 2, h // 2, h - h // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = self.pads(x.shape[-2], x.shape[-1])
        return nn.functional.pad(x, pads) if any(pads) else x

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, dilation={self.dilation}"


PADDING_MODES = ("symmetric", "same")


class ConvBNAct(nn.Sequential):
    """Conv2d → norm → activation, the one conv primitive of the package.

    The conv has a bias only when there is no norm layer (BN's shift makes it redundant). ``act_layer=None`` gives
    a linear layer (V2's linear bottleneck). Padding is ``(kernel - 1) // 2 * dilation`` on every side, so a stride-s
    layer maps an input side ``n`` to ``ceil(n / s)`` for odd kernels, the "same" output size.

    ``padding="same"`` pads as TensorFlow does instead (see :class:`SamePad2d`), for weights trained in Keras or
    TF-Slim: a stride-1 odd kernel is symmetric either way, any other layer gets a ``pad`` child before its conv.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        norm_layer: LayerFn | None = nn.BatchNorm2d,
        act_layer: LayerFn | None = nn.ReLU,
        dilation: int = 1,
        padding: str = "symmetric",
    ):
        if padding not in PADDING_MODES:
            raise MobileNetError(f"padding must be one of {', '.join(PADDING_MODES)}, got {padding!r}")
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        symmetric = (kernel_size - 1) // 2 * dilation
        if padding == "same" and (stride > 1 or kernel_size % 2 == 0):
            layers["pad"] = SamePad2d(kernel_size, stride, dilation)
            symmetric = 0
        layers["conv"] = nn.Conv2d(
            in_chs, out_chs, kernel_size, stride, symmetric, dilation=dilation, groups=groups,
            bias=norm_layer is None,
        )
        if norm_layer is not None:
            layers["bn"] = norm_layer(out_chs)
        if act_layer is not None:
            layers["act"] = act_layer(inplace=True) if _takes_inplace(act_layer) else act_layer()
        super().__init__(layers)
        self.in_chs, self.out_chs, self.stride = in_chs, out_chs, stride


def _takes_inplace(act_layer: LayerFn) -> bool:
    return isinstance(act_layer, type) and issubclass(
        act_layer, (nn.ReLU, nn.ReLU6, nn.Hardswish, nn.Hardsigmoid, nn.SiLU)
    )


class DepthwiseSeparable(nn.Module):
    """MobileNetV1's layer: 3×3 depthwise conv → BN → act, then 1×1 pointwise conv → BN → act (paper Fig. 3)."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        stride: int = 1,
        kernel_size: int = 3,
        norm_layer: LayerFn = nn.BatchNorm2d,
        act_layer: LayerFn = nn.ReLU,
        padding: str = "symmetric",
    ):
        super().__init__()
        self.dw = ConvBNAct(in_chs, in_chs, kernel_size, stride, groups=in_chs, norm_layer=norm_layer,
                            act_layer=act_layer, padding=padding)
        self.pw = ConvBNAct(in_chs, out_chs, 1, norm_layer=norm_layer, act_layer=act_layer)
        self.in_chs, self.out_chs, self.stride = in_chs, out_chs, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw(self.dw(x))


class SqueezeExcite(nn.Module):
    """Squeeze-and-excite as MobileNetV3 uses it: pool → 1×1 conv (bias) → ReLU → 1×1 conv (bias) → gate → scale.

    Its two convs run on a 1×1 map; the cost counter knows this from the module type.
    """

    def __init__(
        self,
        chs: int,
        squeeze_chs: int,
        act_layer: LayerFn = nn.ReLU,
        gate_layer: LayerFn = nn.Hardsigmoid,
    ):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(chs, squeeze_chs, 1)
        self.act = act_layer(inplace=True) if _takes_inplace(act_layer) else act_layer()
        self.fc2 = nn.Conv2d(squeeze_chs, chs, 1)
        self.gate = gate_layer()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.gate(self.fc2(self.act(self.fc1(self.pool(x)))))
        return x * scale


class InvertedResidual(nn.Module):
    """V2's inverted residual with linear bottleneck (V2 Table 1), also V3's ``bneck``.

    1×1 expansion (skipped when ``mid_chs == in_chs``, as in V2's first t = 1 block) → k×k depthwise
    (→ optional squeeze-excite) → linear 1×1 projection, with a residual connection when the stride is 1 and the
    input and output channels match.
    """

    def __init__(
        self,
        in_chs: int,
        mid_chs: int,
        out_chs: int,
        stride: int = 1,
        kernel_size: int = 3,
        norm_layer: LayerFn = nn.BatchNorm2d,
        act_layer: LayerFn = nn.ReLU6,
        se_layer: LayerFn | None = None,
        padding: str = "symmetric",
    ):
        super().__init__()
        self.use_residual = stride == 1 and in_chs == out_chs
        self.expand = (
            ConvBNAct(in_chs, mid_chs, 1, norm_layer=norm_layer, act_layer=act_layer)
            if mid_chs != in_chs else nn.Identity()
        )
        self.dw = ConvBNAct(mid_chs, mid_chs, kernel_size, stride, groups=mid_chs, norm_layer=norm_layer,
                            act_layer=act_layer, padding=padding)
        self.se = se_layer(mid_chs) if se_layer is not None else nn.Identity()
        self.project = ConvBNAct(mid_chs, out_chs, 1, norm_layer=norm_layer, act_layer=None)
        self.in_chs, self.out_chs, self.stride = in_chs, out_chs, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.se(self.dw(self.expand(x))))
        return x + out if self.use_residual else out


class LayerScale(nn.Module):
    """Multiplies each channel by a learned scale, initialised small (CaiT, arXiv 2103.17239).

    Residual blocks whose branch starts near zero train stably when deep; MobileNetV4's hybrid models put one at the
    end of every universal inverted bottleneck and attention block. The cost counter treats it like batch norm: a
    per-channel multiply, not a Mult-Add.
    """

    def __init__(self, chs: int, init_value: float = 1e-5):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((chs,), float(init_value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma.view(1, -1, 1, 1)


class MultiQueryAttention(nn.Module):
    """Multi-query attention on a feature map: ``heads`` queries share one key and one value (arXiv 1911.02150).

    Query: 1×1 conv to ``heads·key_dim``. Key and value: optionally a k×k depthwise conv + norm with stride
    ``kv_stride`` (MobileNetV4's spatial reduction of K/V), then a 1×1 conv to ``key_dim`` (one shared head). Output:
    a 1×1 conv from ``heads·key_dim`` back to ``out_chs``. Projections have no bias. Channels of the query and of the
    attended values are head-major (channel ``h·key_dim + d``). The cost counter adds the two matrix products, Q·Kᵀ
    and A·V, to the convs (see :mod:`mobilenet.cost`).
    """

    def __init__(self, chs: int, out_chs: int, heads: int, key_dim: int, kv_stride: int = 1, kv_kernel: int = 3,
                 norm_layer: LayerFn = nn.BatchNorm2d):
        super().__init__()
        self.heads, self.key_dim, self.kv_stride = heads, key_dim, kv_stride
        self.query = nn.Sequential(OrderedDict(proj=nn.Conv2d(chs, heads * key_dim, 1, bias=False)))
        self.key = self._kv(chs, key_dim, kv_stride, kv_kernel, norm_layer)
        self.value = self._kv(chs, key_dim, kv_stride, kv_kernel, norm_layer)
        self.output = nn.Sequential(OrderedDict(proj=nn.Conv2d(heads * key_dim, out_chs, 1, bias=False)))

    @staticmethod
    def _kv(chs: int, dim: int, stride: int, kernel: int, norm_layer: LayerFn) -> nn.Sequential:
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        if stride > 1:
            layers["down"] = ConvBNAct(chs, chs, kernel, stride, groups=chs, norm_layer=norm_layer, act_layer=None)
        layers["proj"] = nn.Conv2d(chs, dim, 1, bias=False)
        return nn.Sequential(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        q = self.query(x).reshape(b, self.heads, self.key_dim, h * w).transpose(-1, -2)  # (B, heads, N, d)
        k = self.key(x).flatten(2).transpose(-1, -2).unsqueeze(1)  # (B, 1, M, d): one key head for all queries
        v = self.value(x).flatten(2).transpose(-1, -2).unsqueeze(1)
        attn = (q * self.key_dim**-0.5) @ k.transpose(-1, -2)
        out = attn.softmax(dim=-1) @ v  # (B, heads, N, d)
        out = out.transpose(1, 2).reshape(b, h, w, self.heads * self.key_dim).permute(0, 3, 1, 2)
        return self.output(out)
