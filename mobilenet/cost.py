"""Exact Mult-Adds and parameter counts, per layer and per layer type, in the MobileNet papers' convention.

Mult-Adds are the multiply-accumulates of every convolution and fully connected layer (V1 paper eq. 2 and 4):

* standard conv: D_K · D_K · M · N · D_F · D_F (D_F the output side; grouped convs divide M by the groups),
* depthwise conv: D_K · D_K · M · D_F · D_F,
* pointwise conv: M · N · D_F · D_F,
* linear layer: M · N.

* attention (MobileNetV4's Mobile MQA): its projections are convs as above, and its two matrix products count
  too, Q·Kᵀ as N · M · heads · d_k and A·V as N · M · heads · d_v (N query positions, M key positions), one
  ``"attention"`` row per attention layer with no parameters.

Batch norm, layer scale, activations, softmax and the attention's 1/√d scale, pooling, biases, residual adds and
squeeze-excite's channel multiply are not counted. Squeeze-excite's two 1×1 convs run on the pooled 1×1 map and count
as M · N each.

The counter walks the model's real modules in registration order (which every model in this package keeps equal to
forward order) and propagates the feature-map size through each conv and pool arithmetically, so it needs no
forward pass and cannot drift from the model. Tests cross-check its per-layer output sides against hooks on a real
forward pass.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from torch import nn

from .errors import MobileNetError
from .layers import MultiQueryAttention, SamePad2d, SqueezeExcite, is_depthwise

KINDS = ("conv", "depthwise", "pointwise", "linear", "attention")


@dataclass(frozen=True)
class LayerCost:
    """One conv or linear layer: where it is, what it is, and what it costs."""

    name: str
    kind: str  # one of KINDS
    in_chs: int
    out_chs: int
    kernel: int
    stride: int
    groups: int
    out_side: int  # output height (the width is out_width; equal for square inputs)
    out_width: int
    mult_adds: int
    params: int  # weight + bias
    weight_params: int  # weight only, the V1 paper's Table 2 convention


@dataclass
class Cost:
    """What :func:`count_cost` returns. ``params`` counts every parameter (BN included); ``params_no_bn`` only the
    conv and linear weights and biases (the TF-Slim / paper convention)."""

    model: str
    alpha: float | None
    resolution: int
    mult_adds: int
    params: int
    params_no_bn: int
    layers: list[LayerCost] = field(repr=False)

    def by_kind(self) -> dict[str, dict]:
        """V1 paper Table 2: Mult-Adds and parameters per layer type, with their shares in percent.

        Parameter shares use weights only (no biases, no BN), which is how the paper's printed shares come out.
        """
        total_w = sum(layer.weight_params for layer in self.layers) or 1
        out = {}
        for kind in KINDS:
            rows = [layer for layer in self.layers if layer.kind == kind]
            if not rows:
                continue
            madds = sum(r.mult_adds for r in rows)
            weights = sum(r.weight_params for r in rows)
            out[kind] = {
                "layers": len(rows),
                "mult_adds": madds,
                "weight_params": weights,
                "mult_adds_pct": 100.0 * madds / (self.mult_adds or 1),
                "params_pct": 100.0 * weights / total_w,
            }
        return out

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "alpha": self.alpha,
            "resolution": self.resolution,
            "mult_adds": self.mult_adds,
            "params": self.params,
            "params_no_bn": self.params_no_bn,
            "by_kind": self.by_kind(),
            "layers": [asdict(layer) for layer in self.layers],
        }

    def table(self) -> str:
        """A per-layer text table (output shape, Mult-Adds, params) followed by the totals and the per-type shares."""
        head = f"{'layer':<28} {'kind':<9} {'filter':<22} {'output':>15} {'Mult-Adds':>13} {'params':>11}"
        lines = [head, "-" * len(head)]
        for r in self.layers:
            if r.kind == "linear":
                filt = f"{r.in_chs}x{r.out_chs}"
            elif r.kind == "attention":
                filt = f"{r.out_chs} heads x {r.in_chs}"
            elif r.kind == "depthwise":
                filt = f"{r.kernel}x{r.kernel}x{r.in_chs} dw /{r.stride}"
            else:
                filt = f"{r.kernel}x{r.kernel}x{r.in_chs}x{r.out_chs} /{r.stride}"
            shape = f"{r.out_side}x{r.out_width}x{r.out_chs}"
            lines.append(f"{r.name:<28} {r.kind:<9} {filt:<22} {shape:>15} {r.mult_adds:>13,} {r.params:>11,}")
        lines.append("-" * len(head))
        lines.append(f"{'total':<28} {'':<9} {'':<22} {'':>15} {self.mult_adds:>13,} {self.params_no_bn:>11,}")
        lines.append(
            f"\n{self.model} alpha={self.alpha} resolution={self.resolution}: "
            f"{self.mult_adds / 1e6:.1f}M Mult-Adds, {self.params / 1e6:.3f}M params "
            f"({self.params:,} with BN, {self.params_no_bn:,} conv/linear only)"
        )
        lines.append(f"{'type':<10} {'Mult-Adds':>10} {'params':>8}")
        for kind, row in self.by_kind().items():
            lines.append(f"{kind:<10} {row['mult_adds_pct']:>9.2f}% {row['params_pct']:>7.2f}%")
        return "\n".join(lines)


def matches_printed(value: float, printed: float) -> bool:
    """Whether an exact count agrees with a number printed in a paper at the paper's precision.

    The MobileNet papers both round (568.74M → "569") and truncate (290.68M → "290", 76.50M → "76"), so a value
    matches when rounding or truncating it to the printed number of decimals gives the printed number.
    """
    text = repr(float(printed))
    decimals = 0 if float(printed).is_integer() else len(text.split(".")[1])
    scale = 10**decimals
    return round(printed * scale) in (round(value * scale), math.floor(value * scale + 1e-9))


def count_cost(model: nn.Module, resolution: int | tuple[int, int] | None = None) -> Cost:
    """Counts a model's exact Mult-Adds and parameters at an input side (default: the model's ``resolution``).

    Args:
        model: any module built from Conv2d / Linear / pooling layers in forward order, e.g. ``create_model(...)``.
        resolution: the input side ``R`` (or ``(H, W)``); defaults to ``model.resolution``.
    """
    if resolution is None:
        resolution = getattr(model, "resolution", None)
        if resolution is None:
            raise MobileNetError("resolution is required for a module without a .resolution attribute")
    size = (resolution, resolution) if isinstance(resolution, int) else tuple(resolution)
    if len(size) != 2 or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in size):
        raise MobileNetError(f"resolution must be a positive integer or (H, W) pair, got {resolution!r}")
    rows: list[LayerCost] = []
    _walk(model, "", size, rows)
    return Cost(
        model=getattr(model, "name", type(model).__name__),
        alpha=getattr(model, "alpha", None),
        resolution=size[0],
        mult_adds=sum(r.mult_adds for r in rows),
        params=sum(p.numel() for p in model.parameters()),
        params_no_bn=sum(r.params for r in rows),
        layers=rows,
    )


def _out_size(size: int, kernel: int, stride: int, padding: int, dilation: int = 1) -> int:
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def _walk(module: nn.Module, prefix: str, size: tuple[int, int], rows: list[LayerCost]) -> tuple[int, int]:
    if isinstance(module, nn.Conv2d):
        return _conv(module, prefix, size, rows)
    if isinstance(module, nn.Linear):
        m, n = module.in_features, module.out_features
        rows.append(LayerCost(prefix, "linear", m, n, 1, 1, 1, 1, 1, m * n, _numel(module), m * n))
        return (1, 1)
    if isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        out = _pair(module.output_size)
        return tuple(o if o is not None else s for o, s in zip(out, size))
    if isinstance(module, (nn.AvgPool2d, nn.MaxPool2d)):
        k, s, p = _pair(module.kernel_size), _pair(module.stride or module.kernel_size), _pair(module.padding)
        return tuple(_out_size(size[i], k[i], s[i], p[i]) for i in range(2))
    if isinstance(module, (nn.ZeroPad2d, SamePad2d)):
        left, right, top, bottom = module.pads(*size) if isinstance(module, SamePad2d) else module.padding
        return (size[0] + top + bottom, size[1] + left + right)
    if isinstance(module, SqueezeExcite):
        # The excitation convs see the globally pooled 1×1 map; the block's output keeps the input's size.
        for name, child in module.named_children():
            _walk(child, f"{prefix}.{name}", (1, 1), rows)
        return size
    if isinstance(module, MultiQueryAttention):
        return _attention(module, prefix, size, rows)
    for name, child in module.named_children():
        size = _walk(child, f"{prefix}.{name}" if prefix else name, size, rows)
    return size


def _attention(attn: MultiQueryAttention, name: str, size: tuple[int, int], rows: list[LayerCost]) -> tuple[int, int]:
    # Query, key and value each start from the block's input; the output projection runs at the query's side.
    _walk(attn.query, f"{name}.query", size, rows)
    kv = _walk(attn.key, f"{name}.key", size, rows)
    _walk(attn.value, f"{name}.value", size, rows)
    n, m = size[0] * size[1], kv[0] * kv[1]
    madds = n * m * attn.heads * attn.key_dim * 2  # Q·Kᵀ, then A·V (value width = key width)
    rows.append(LayerCost(f"{name}.matmul", "attention", attn.key_dim, attn.heads, 1, 1, 1, size[0], size[1],
                          madds, 0, 0))
    return _walk(attn.output, f"{name}.output", size, rows)


def _conv(conv: nn.Conv2d, name: str, size: tuple[int, int], rows: list[LayerCost]) -> tuple[int, int]:
    if isinstance(conv.padding, str):
        raise ValueError(f"{name}: string padding {conv.padding!r} is not supported by the counter")
    k, s, p, d = (_pair(v) for v in (conv.kernel_size, conv.stride, conv.padding, conv.dilation))
    out = tuple(_out_size(size[i], k[i], s[i], p[i], d[i]) for i in range(2))
    m, n, g = conv.in_channels, conv.out_channels, conv.groups
    if is_depthwise(conv):
        kind = "depthwise"
    elif k == (1, 1) and g == 1:
        kind = "pointwise"
    else:
        kind = "conv"
    weights = conv.weight.numel()
    madds = weights * out[0] * out[1]  # k·k·(M/g)·N per output position
    rows.append(LayerCost(name, kind, m, n, k[0], s[0], g, out[0], out[1], madds, _numel(conv), weights))
    return out


def _numel(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters(recurse=False))
