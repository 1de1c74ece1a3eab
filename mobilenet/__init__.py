"""MobileNets (V1, V2, V3) at any width and resolution, with exact cost counting."""

from .cost import Cost, LayerCost, count_cost
from .layers import ConvBNAct, DepthwiseSeparable, InvertedResidual, SqueezeExcite, make_divisible, round_channels
from .models import MobileNet, create_model, list_models, register_model

__version__ = "0.1.0"

__all__ = [
    "ConvBNAct", "Cost", "DepthwiseSeparable", "InvertedResidual", "LayerCost", "MobileNet", "SqueezeExcite",
    "count_cost", "create_model", "list_models", "make_divisible", "register_model", "round_channels",
]
