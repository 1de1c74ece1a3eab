"""A tiny model registry: builders register by function name, ``create_model`` looks them up."""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable

import torch
from torch import nn

from ..errors import MobileNetError
from ..features import FeatureExtractor

_MODELS: dict[str, Callable[..., nn.Module]] = {}
# name -> the paper's ImageNet numbers, {(alpha, resolution): (top-1 %, Mult-Adds M, params M)}
_PUBLISHED: dict[str, dict[tuple[float, int], tuple]] = {}

# The largest model create_model builds: 10^9 parameters (4 GB in fp32), 140x the papers' largest MobileNet. Beyond
# the published range (α > 1.5, more than 10^4 classes or 16 input channels) a model is sized on the meta device
# first, so α = 1000 is a clear error instead of a 100 GB allocation or the out-of-memory killer.
MAX_PARAMS = 10**9
_SIZED_BEYOND = {"alpha": 1.5, "num_classes": 10**4, "in_chans": 16}


def register_model(fn: Callable[..., nn.Module] | None = None, *, published: dict | None = None):
    """Registers a model builder under its function name: ``@register_model``, or
    ``@register_model(published=TABLE)`` with the paper's ``{(alpha, resolution): (top-1 %, Mult-Adds M,
    params M)}`` for that model (what :func:`published_table` returns)."""

    def register(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if fn.__name__ in _MODELS:
            raise RuntimeError(f"model {fn.__name__!r} registered twice")
        _MODELS[fn.__name__] = fn
        _PUBLISHED[fn.__name__] = dict(published or {})
        return fn

    return register if fn is None else register(fn)


def published_table(name: str) -> dict[tuple[float, int], tuple]:
    """The paper's ImageNet numbers for model ``name``: ``{(alpha, resolution): (top-1 %, Mult-Adds M, params M)}``
    (empty when the paper prints none)."""
    get_builder(name)
    return dict(_PUBLISHED[name])


def list_models(pattern: str = "*") -> list[str]:
    """Names of the registered models matching a shell-style ``pattern``, sorted."""
    return sorted(name for name in _MODELS if fnmatch.fnmatchcase(name, pattern))


def get_builder(name: str) -> Callable[..., nn.Module]:
    """The builder registered as ``name``; a ``ValueError`` naming the closest names otherwise."""
    try:
        return _MODELS[name]
    except KeyError:
        close = difflib.get_close_matches(name, _MODELS, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else f"available: {', '.join(list_models())}"
        raise MobileNetError(f"unknown model {name!r}; {hint}") from None


def create_model(name: str, features_only: bool = False, out_indices=None, weights=None, weights_sha256=None,
                 **kwargs) -> nn.Module:
    """Builds the registered model ``name``.

    Every model accepts ``alpha`` (width multiplier α, default 1.0), ``resolution`` (input side the model is meant
    for, default 224) or ``rho`` (resolution multiplier ρ, meaning resolution = round(224·ρ)), ``num_classes``
    (default 1000), ``in_chans`` (default 3), ``dropout`` and ``rounding`` (channel-rounding policy). Bad values
    raise ``ValueError`` naming the value and the accepted range.

    ``features_only=True`` returns a :class:`mobilenet.features.FeatureExtractor` instead: its forward gives the
    feature maps at the downsampling stages ``out_indices`` (default all five: reductions 2, 4, 8, 16, 32) and its
    ``feature_info`` lists their channels, reductions and module names.

    ``weights`` (a local path or an http(s)/file URL, downloaded once into a cache) loads weights into the model:
    safetensors, or a PyTorch file read with ``weights_only=True`` (a file that would run code is refused). The
    builder options recorded in the file (written by ``mobilenet convert``: TF padding, BN eps, …) are applied, and
    ``weights_sha256`` (64 hex digits), when given, must match the file. See :mod:`mobilenet.weights`.
    """
    if out_indices is not None and not features_only:
        raise MobileNetError("out_indices is only used with features_only=True")
    builder = _sized(get_builder(name), name)
    if weights is not None:
        from .pretrained import create_model_with_weights  # imported on use, so building a model stays light

        model = create_model_with_weights(builder, name, weights, weights_sha256, **kwargs)
    elif weights_sha256 is not None:
        raise MobileNetError("weights_sha256 is only used with weights=")
    else:
        model = builder(**kwargs)
    if features_only:
        model = FeatureExtractor(model, out_indices)
    return model


def _sized(builder: Callable[..., nn.Module], name: str) -> Callable[..., nn.Module]:
    """``builder``, refusing (MobileNetError) a model of more than ``MAX_PARAMS`` parameters before allocating it."""

    def build(**kwargs) -> nn.Module:
        beyond = any(isinstance(kwargs.get(k), (int, float)) and kwargs[k] > limit
                     for k, limit in _SIZED_BEYOND.items())
        if beyond:
            shown = ", ".join(f"{k}={kwargs[k]:g}" for k in _SIZED_BEYOND if k in kwargs)
            try:
                with torch.device("meta"):
                    params = sum(p.numel() for p in builder(**kwargs).parameters())
            except RuntimeError:  # even the tensor sizes overflow 64 bits
                raise MobileNetError(f"{name} with {shown} is too large to build (its tensor sizes overflow)") from None
            if params > MAX_PARAMS:
                raise MobileNetError(f"{name} with {shown} would have {params:,} parameters ({params * 4 / 1e9:,.0f} "
                                     f"GB in fp32), more than the {MAX_PARAMS:,} this package builds")
        return builder(**kwargs)

    return build
