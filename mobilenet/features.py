"""Multi-scale feature maps from any MobileNet, for detection and segmentation heads.

A model's ``features`` is a sequence (stem, blocks, last conv). Walking its children and multiplying their strides
gives each child's reduction (input side / output side); a *stage* ends at the last child of each reduction, so the
five stages of every MobileNet end at reductions 2, 4, 8, 16 and 32. The stage boundaries are computed from the
modules, not listed per model, so every registered model, present or future, gets feature extraction for free.

``feature_info`` follows timm: one dict per returned map with ``num_chs`` (channels), ``reduction`` (stride from the
input) and ``module`` (the child's name, e.g. ``"features.6"``), plus ``index`` (its position in ``features``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from .errors import MobileNetError


class FeatureInfo(list):
    """A list of ``{"num_chs", "reduction", "module", "index"}`` dicts, one per stage, with timm-style accessors."""

    def channels(self) -> list[int]:
        return [f["num_chs"] for f in self]

    def reduction(self) -> list[int]:
        return [f["reduction"] for f in self]

    def module_name(self) -> list[str]:
        return [f["module"] for f in self]


def module_stride(module: nn.Module) -> int:
    """How much a module divides the input side: its ``stride`` attribute, else the product of its convs' and
    pools' strides (global pools and squeeze-excite's pooled branch excluded: they do not change the output side)."""
    stride = getattr(module, "stride", None)
    if isinstance(stride, int):
        return stride
    total = 1
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
            s = m.stride if m.stride is not None else m.kernel_size
            total *= s if isinstance(s, int) else s[0]
    return total


def module_channels(module: nn.Module, default: int) -> int:
    """Channels a module outputs: its ``out_chs`` attribute, else the last conv's output channels, else ``default``."""
    out = getattr(module, "out_chs", None)
    if isinstance(out, int):
        return out
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1].out_channels if convs else default


def stage_info(model: nn.Module) -> FeatureInfo:
    """One entry per downsampling stage of ``model.features``: the last child at each reduction (2, 4, 8, 16, 32)."""
    body = getattr(model, "features", None)
    if not isinstance(body, nn.Sequential):
        raise MobileNetError(f"{type(model).__name__} has no `features` sequence to extract stages from")
    reduction, chs = 1, getattr(model, "in_chans", 3)
    last_at: dict[int, dict] = {}
    for index, (name, child) in enumerate(body.named_children()):
        reduction *= module_stride(child)
        chs = module_channels(child, chs)
        last_at[reduction] = {"num_chs": chs, "reduction": reduction, "module": f"features.{name}", "index": index}
    return FeatureInfo(last_at[r] for r in sorted(last_at) if r > 1)


def resolve_indices(info: Sequence[dict], out_indices: Sequence[int] | None) -> list[int]:
    """Checks ``out_indices`` (stage numbers, negative counting from the end; default all) and normalises them."""
    n = len(info)
    if out_indices is None:
        return list(range(n))
    if isinstance(out_indices, int) and not isinstance(out_indices, bool):
        out_indices = [out_indices]
    picked = []
    for i in out_indices:
        if isinstance(i, bool) or not isinstance(i, int) or not -n <= i < n:
            raise MobileNetError(f"out_indices must be stage numbers in [{-n}, {n - 1}] for this model "
                                 f"(reductions {[f['reduction'] for f in info]}), got {out_indices!r}")
        picked.append(i % n)
    if len(set(picked)) != len(picked) or picked != sorted(picked):
        raise MobileNetError(f"out_indices must be increasing and distinct, got {tuple(out_indices)!r}")
    return picked


def forward_intermediates(
    model: nn.Module,
    x: torch.Tensor,
    indices: Sequence[int] | int | None = None,
    stop_early: bool = False,
) -> tuple[torch.Tensor | None, list[torch.Tensor]]:
    """Runs ``model.features`` and also returns the feature maps at the chosen stages.

    Args:
        model: a model with a ``features`` sequence.
        x: the input batch, (B, C, H, W).
        indices: stage numbers (0 = reduction 2 … 4 = reduction 32); default every stage.
        stop_early: stop after the last requested stage and return ``None`` as the final map.

    Returns:
        ``(final, maps)``: the body's last feature map (what ``forward_features`` returns) and the stage maps.
    """
    info = stage_info(model)
    wanted = {info[i]["index"] for i in resolve_indices(info, indices)}
    maps = []
    children = list(model.features.children())
    stop = max(wanted) if stop_early else len(children) - 1
    for index, child in enumerate(children[: stop + 1]):
        x = child(x)
        if index in wanted:
            maps.append(x)
    return (None if stop_early and stop < len(children) - 1 else x), maps


class FeatureExtractor(nn.Module):
    """A MobileNet body cut after its last requested stage; ``forward`` returns the list of stage maps.

    Shares the wrapped model's modules (and weights). Built by ``create_model(name, features_only=True)``.

    Args:
        model: a model with a ``features`` sequence, e.g. ``create_model("mobilenet_v3_large")``.
        out_indices: stage numbers to return, increasing (0 = reduction 2, …, 4 = reduction 32); default all.
    """

    def __init__(self, model: nn.Module, out_indices: Sequence[int] | int | None = None):
        super().__init__()
        info = stage_info(model)
        self.out_indices = tuple(resolve_indices(info, out_indices))
        self.feature_info = FeatureInfo(info[i] for i in self.out_indices)
        self._taps = {f["index"] for f in self.feature_info}
        # Children after the last requested stage are never run, so they are not kept.
        kept = list(model.features.named_children())[: max(self._taps) + 1]
        self.features = nn.Sequential(OrderedDict(kept))  # same child names, so feature_info's names hold here too
        self.name = getattr(model, "name", type(model).__name__)
        self.alpha, self.resolution = getattr(model, "alpha", None), getattr(model, "resolution", None)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        maps = []
        for index, child in enumerate(self.features):
            x = child(x)
            if index in self._taps:
                maps.append(x)
        return maps
