"""MobileNets (V1, V2, V3) at any width and resolution, with exact cost counting."""

from importlib import metadata as _metadata

from .cost import Cost, LayerCost, count_cost
from .layers import ConvBNAct, DepthwiseSeparable, InvertedResidual, SqueezeExcite, make_divisible, round_channels
from .models import MobileNet, create_model, list_models, register_model

try:
    __version__ = _metadata.version("mobilenet")  # one version, pyproject.toml's
except _metadata.PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "ConvBNAct", "Cost", "DepthwiseSeparable", "InvertedResidual", "LayerCost", "MobileNet", "SqueezeExcite",
    "count_cost", "create_model", "list_models", "make_divisible", "register_model", "round_channels",
]
