"""Model builders; importing this package registers every model."""

from . import mobilenet_v1, mobilenet_v2, mobilenet_v3, mobilenet_v4  # noqa: F401  (registers the builders)
from .base import MobileNet
from .registry import create_model, get_builder, list_models, published_table, register_model

__all__ = ["MobileNet", "create_model", "get_builder", "list_models", "published_table", "register_model"]
