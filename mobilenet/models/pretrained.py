"""Building a registered model from a weight file: the builder options the file records, then a strict load.

See :mod:`mobilenet.weights` for the file format and :mod:`mobilenet.download` for URLs and checksums.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial

from torch import nn

from ..download import fetch
from ..errors import MobileNetError
from ..normalization import IMAGENET_MEAN, IMAGENET_STD
from ..statedict import load_strict
from ..weights import OPTION_NAMES, load_weights

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "relu6": nn.ReLU6}


def options_to_kwargs(options: dict) -> dict:
    """Builder keyword arguments from the ``options`` recorded in a weight file."""
    unknown = sorted(set(options) - set(OPTION_NAMES))
    if unknown:
        raise MobileNetError(f"the weights record options this version does not know: {', '.join(unknown)}")
    kwargs = {k: v for k, v in options.items() if k not in ("bn_eps", "bn_momentum", "act")}
    if "bn_eps" in options or "bn_momentum" in options:
        bn = {"eps": float(options.get("bn_eps", 1e-5))}
        if "bn_momentum" in options:
            bn["momentum"] = float(options["bn_momentum"])
        kwargs["norm_layer"] = partial(nn.BatchNorm2d, **bn)
    if "act" in options:
        if options["act"] not in ACTIVATIONS:
            raise MobileNetError(f"unknown activation {options['act']!r} in the weights' options")
        kwargs["act_layer"] = ACTIVATIONS[options["act"]]
    return kwargs


def create_model_with_weights(builder: Callable[..., nn.Module], name: str, weights: str | os.PathLike,
                              sha256: str | None = None, **kwargs) -> nn.Module:
    """Builds ``name`` with the options recorded in ``weights`` (explicit ``kwargs`` win) and loads the weights.

    The model gets a ``preprocessing`` attribute, ``{"mean": (...), "std": (...)}``, the normalisation the weights
    expect of an RGB image in [0, 1] (ImageNet's mean and std when the file does not say).
    """
    state, info = load_weights(fetch(weights, sha256))
    recorded = info.get("model")
    if recorded and recorded != name:
        raise MobileNetError(f"the weights are for {recorded}, not {name}")
    try:
        recorded_kwargs = options_to_kwargs(info.get("options", {}))
        if "rho" in kwargs:  # an explicit ρ replaces the recorded resolution
            recorded_kwargs.pop("resolution", None)
        model = builder(**{**recorded_kwargs, **kwargs})
    except MobileNetError:
        raise
    except (TypeError, ValueError) as e:  # recorded options of the wrong type or range
        raise MobileNetError(f"the options recorded in {str(weights)!r} cannot build {name}: {e}") from None
    load_strict(model, state, what="weights")
    pre = info.get("preprocessing") or {}
    model.preprocessing = {"mean": tuple(pre.get("mean", IMAGENET_MEAN)), "std": tuple(pre.get("std", IMAGENET_STD))}
    return model
