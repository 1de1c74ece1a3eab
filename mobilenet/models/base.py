"""What every MobileNet shares: argument checking (α, ρ, resolution, …) and the classifier API."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import MobileNetError
from ..features import FeatureInfo, forward_intermediates, stage_info
from ..layers import ROUNDING_POLICIES

BASE_RESOLUTION = 224  # the papers' ρ = 1 input side


@dataclass(frozen=True)
class ModelArgs:
    """The knobs every builder takes, checked once. See :func:`resolve_args`."""

    alpha: float
    resolution: int
    num_classes: int
    in_chans: int
    dropout: float
    rounding: str


# The arguments every builder takes, described once; each builder's docstring is assembled from these by
# :func:`document_args`, with what differs per model (defaults, rounding) added there.
ARG_DOCS = {
    "alpha": "width multiplier α > 0 (default 1.0): every layer's channels × α (cost ∝ α²)",
    "resolution": "the input side the model is meant for, ρ·224 (default 224); the network accepts any side ≥ 1",
    "rho": "resolution multiplier ρ > 0, instead of ``resolution``: resolution = round(224·ρ)",
    "num_classes": "classifier outputs, ≥ 1 (default 1000)",
    "in_chans": "input image channels, ≥ 1 (default 3; 1 for grayscale)",
    "dropout": "dropout probability before the classifier, in [0, 1)",
    "rounding": "channel rounding policy, one of ``ROUNDING_POLICIES``",
}
_INPUTS = "Inputs are float images normalised with the ImageNet mean and std, (B, in_chans, H, W)."


def document_args(**specific: str) -> Callable:
    """A decorator that appends the Args section to a builder's docstring.

    Args:
        **specific: per argument, text added to its :data:`ARG_DOCS` entry (a default, a model-specific rule), or
            the description of an argument only this builder takes.
    """
    lines = ["", "Args:"]
    for name, text in {**ARG_DOCS, **{k: v for k, v in specific.items() if k not in ARG_DOCS}}.items():
        if name in ARG_DOCS and name in specific:
            text = f"{text}; {specific[name]}"
        lines += textwrap.wrap(f"{name}: {text}.", 112, initial_indent="    ", subsequent_indent="        ",
                               break_long_words=False, break_on_hyphens=False)
    section = textwrap.indent("\n".join(lines + ["", _INPUTS]), "    ")

    def decorate(fn: Callable) -> Callable:
        fn.__doc__ = (fn.__doc__ or "").rstrip() + "\n" + section + "\n"
        return fn

    return decorate


def resolve_args(
    *,
    alpha: float = 1.0,
    resolution: int | None = None,
    rho: float | None = None,
    num_classes: int = 1000,
    in_chans: int = 3,
    dropout: float = 0.0,
    rounding: str = "divisible8",
) -> ModelArgs:
    """Checks the common builder arguments (:data:`ARG_DOCS`) and resolves ρ into a resolution."""
    if not _is_real(alpha) or not alpha > 0 or not math.isfinite(alpha):
        raise MobileNetError(f"alpha must be a finite number > 0 (typical 0.25-1.4), got {alpha!r}")
    if rho is not None:
        if resolution is not None:
            raise MobileNetError("give either resolution or rho, not both")
        if not _is_real(rho) or not rho > 0 or not math.isfinite(rho):
            raise MobileNetError(f"rho must be a finite number > 0 (typical 4/7-1), got {rho!r}")
        resolution = max(1, round(BASE_RESOLUTION * rho))
    resolution = BASE_RESOLUTION if resolution is None else resolution
    _check_int("resolution", resolution, "an input side in pixels, >= 1")
    _check_int("num_classes", num_classes, ">= 1")
    _check_int("in_chans", in_chans, ">= 1")
    if not _is_real(dropout) or not 0 <= dropout < 1:
        raise MobileNetError(f"dropout must be in [0, 1), got {dropout!r}")
    if rounding not in ROUNDING_POLICIES:
        raise MobileNetError(f"unknown rounding policy {rounding!r}; expected one of {', '.join(ROUNDING_POLICIES)}")
    return ModelArgs(float(alpha), int(resolution), int(num_classes), int(in_chans), float(dropout), rounding)


def lookup_published(table: dict, args: ModelArgs) -> dict | None:
    """The paper's ImageNet numbers for this (α, resolution), from a ``{(alpha, res): (top1, MAdds M, params M)}``."""
    row = table.get((args.alpha, args.resolution))
    return None if row is None else dict(zip(("top1", "mult_adds_m", "params_m"), row))


def _is_real(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_int(name: str, value, accepted: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise MobileNetError(f"{name} must be an integer {accepted}, got {value!r}")


class MobileNet(nn.Module):
    """A feature body followed by global average pooling, an optional pre-logits layer and a linear classifier.

    Subclasses only build ``features``; the head and the public API are the same for every model:
    ``forward_features``, ``forward_head``, ``forward``, ``reset_classifier``, plus the attributes ``name``,
    ``alpha``, ``resolution``, ``num_classes``, ``num_features`` and ``published`` (the paper's ImageNet numbers for
    this exact configuration, or ``None``).

    Args:
        features: the convolutional body, a sequence of stem, blocks and final conv.
        num_features: channels the body outputs.
        args: the resolved common arguments.
        name: registry name.
        head_chs: if set, a ``Linear(num_features, head_chs)`` + ``head_act`` after pooling (V3's pre-logits).
        head_act: activation of that layer.
    """

    def __init__(
        self,
        features: nn.Sequential,
        num_features: int,
        args: ModelArgs,
        name: str,
        head_chs: int | None = None,
        head_act: type[nn.Module] = nn.Hardswish,
        published: dict | None = None,
    ):
        super().__init__()
        self.name, self.alpha, self.resolution = name, args.alpha, args.resolution
        self.rounding, self.in_chans = args.rounding, args.in_chans
        self.published = published
        self.features = features
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        if head_chs is None:
            self.head = nn.Identity()
            self.num_features = num_features
        else:
            self.head = nn.Sequential(nn.Linear(num_features, head_chs), head_act())
            self.num_features = head_chs
        self.dropout = nn.Dropout(args.dropout)
        self.num_classes = args.num_classes
        self.classifier = nn.Linear(self.num_features, args.num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        # The V2/V3 reference initialisation: He-normal (fan-out) convs, unit BN, small-normal linear layers.
        if self.classifier.weight.is_meta:
            return  # built on the meta device for its shapes alone (cost counting): there are no values to set
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The body's last feature map, (B, C, ceil(H/32), ceil(W/32))."""
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pools a feature map and classifies it; ``pre_logits=True`` stops before dropout and the classifier."""
        x = self.head(self.flatten(self.global_pool(x)))
        return x if pre_logits else self.classifier(self.dropout(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    @property
    def feature_info(self) -> FeatureInfo:
        """The downsampling stages of ``features`` (reductions 2 … 32): ``num_chs``, ``reduction``, ``module``."""
        return stage_info(self)

    def forward_intermediates(
        self, x: torch.Tensor, indices=None, stop_early: bool = False, intermediates_only: bool = False,
    ):
        """The body's last feature map and the maps at the stages ``indices`` (default all of ``feature_info``).

        Returns ``(final, maps)``, or only ``maps`` with ``intermediates_only=True`` (which also stops early).
        """
        final, maps = forward_intermediates(self, x, indices, stop_early or intermediates_only)
        return maps if intermediates_only else (final, maps)

    def reset_classifier(self, num_classes: int) -> None:
        """Replaces the classifier with a freshly initialised one of ``num_classes`` outputs."""
        _check_int("num_classes", num_classes, ">= 1")
        self.num_classes = num_classes
        self.classifier = nn.Linear(self.num_features, num_classes)
        nn.init.normal_(self.classifier.weight, 0, 0.01)
        nn.init.zeros_(self.classifier.bias)
