"""Weights in and out of other libraries: torchvision, timm and Keras MobileNets, with exact numerics.

``import_weights`` turns a source file into our model plus the metadata its converted weights carry (the source's
architecture options and preprocessing); ``convert`` also writes them as safetensors, which
``create_model(name, weights=PATH)`` loads with those options applied. ``export_weights`` goes back to torchvision's
or timm's state-dict layout. One module per source holds its maps; ``common`` holds the machinery.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from ..download import fetch, file_sha256
from ..errors import MobileNetError
from ..layers import SamePad2d
from ..weights import load_weights, save_weights
from . import keras, timm, torchvision
from .common import SourceModel, build, export_state, import_state

SOURCES: dict[str, dict[str, SourceModel]] = {
    "torchvision": torchvision.MODELS,
    "timm": timm.MODELS,
    "keras": keras.MODELS,
}
EXPORT_TARGETS = ("torchvision", "timm")

__all__ = ["SOURCES", "EXPORT_TARGETS", "convert", "export_weights", "import_weights", "source_model"]


def source_model(library: str, name: str) -> SourceModel:
    """The map for ``library``'s model ``name``; a MobileNetError listing the known names otherwise."""
    if library not in SOURCES:
        raise MobileNetError(f"unknown source {library!r}; expected one of {', '.join(SOURCES)}")
    if name not in SOURCES[library]:
        raise MobileNetError(f"no map for {library} model {name!r}; known: {', '.join(SOURCES[library])}")
    return SOURCES[library][name]


def import_weights(src: str | os.PathLike, library: str, name: str, alpha: float | None = None,
                   resolution: int | None = None, sha256: str | None = None, drop_background: bool = True,
                   mean: tuple | None = None, std: tuple | None = None) -> tuple[nn.Module, dict]:
    """Loads another library's weights into our model.

    Args:
        src: the source file (or URL): a state dict for torchvision/timm (``.pth``/``.pt``/``.bin`` read with
            ``weights_only=True``, or ``.safetensors``), a Keras ``.h5``/``.weights.h5``/``.keras`` file.
        library: ``"torchvision"``, ``"timm"`` or ``"keras"``.
        name: the source's model name (``mobilenet_v2``, ``mobilenetv3_large_100``, ``MobileNet``, …).
        alpha: width multiplier α; inferred from the weights' layer widths when omitted.
        resolution: the input side the weights were trained at (recorded; default 224).
        sha256: expected SHA-256 of ``src``.
        drop_background: drop the background logit (index 0) of a 1001-class classifier (TF-Slim checkpoints).
        mean, std: override the recorded input normalisation (e.g. for a timm tag trained with other values).

    Returns:
        ``(model, info)``: our model in eval mode and the metadata to save with its weights.
    """
    spec = source_model(library, name)
    path = fetch(src, sha256)
    if library == "keras":
        model, info = keras.import_keras(path, name, alpha, resolution, drop_background)
    else:
        model, info = import_state(spec, load_weights(path)[0], alpha, resolution, drop_background)
    info["source"].update(library=library, file=Path(path).name, sha256=file_sha256(path))
    if mean is not None or std is not None:
        info["preprocessing"] = {"mean": list(mean or info["preprocessing"]["mean"]),
                                 "std": list(std or info["preprocessing"]["std"])}
    model.preprocessing = {k: tuple(v) for k, v in info["preprocessing"].items()}
    return model, info


def convert(src: str | os.PathLike, library: str, name: str, out: str | os.PathLike,
            **kwargs) -> tuple[nn.Module, dict]:
    """:func:`import_weights`, then writes ``out`` as safetensors with the metadata; returns ``(model, info)``."""
    model, info = import_weights(src, library, name, **kwargs)
    save_weights(out, model.state_dict(), info)
    return model, info


def export_weights(model: nn.Module, library: str, name: str, out: str | os.PathLike | None = None
                   ) -> dict[str, torch.Tensor]:
    """Our model's weights in ``library``'s layout for its model ``name`` (torchvision or timm), optionally saved.

    A different BN eps is compensated exactly (the running variance absorbs the difference); a difference that
    cannot be compensated (TF "same" padding, another activation) is an error, since the result would compute
    something else. ``out`` ending in ``.safetensors`` is written as safetensors, anything else with ``torch.save``
    (a plain dict of tensors, loadable with ``weights_only=True``).
    """
    if library not in EXPORT_TARGETS:
        raise MobileNetError(f"cannot export to {library!r}; expected one of {', '.join(EXPORT_TARGETS)}")
    spec = source_model(library, name)
    if getattr(model, "name", None) != spec.model:
        raise MobileNetError(f"{library} {name} is our {spec.model}, but the weights are for {model.name}")
    reference = build(spec, model.alpha, model.num_classes)
    for what, ours, theirs in (("padding", _padding(model), _padding(reference)),
                               ("activations", _acts(model), _acts(reference))):
        if ours != theirs:
            raise MobileNetError(f"{library}'s {name} uses {what} {theirs}, these weights need {ours}: its outputs "
                                 f"would differ, so they are not exported")
    state = export_state(spec, model)
    shift = _bn_eps(model) - _bn_eps(reference)
    if shift:
        for key in [k for k in state if k.endswith("running_var")]:
            state[key] = state[key] + shift
            if (state[key] <= 0).any():
                raise MobileNetError(f"cannot compensate BN eps {_bn_eps(model):g} -> {_bn_eps(reference):g} at "
                                     f"{key}: the variance would not stay positive")
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.suffix == ".safetensors":
            from safetensors.torch import save_file
            save_file({k: v.contiguous() for k, v in state.items()}, str(out), metadata={"format": "pt"})
        else:
            torch.save(state, out)
    return state


def _padding(model: nn.Module) -> str:
    return "same" if any(isinstance(m, SamePad2d) for m in model.modules()) else "symmetric"


def _acts(model: nn.Module) -> list[str]:
    kinds = (nn.ReLU, nn.ReLU6, nn.Hardswish, nn.SiLU, nn.GELU)
    return sorted({type(m).__name__ for m in model.features.modules() if isinstance(m, kinds)})


def _bn_eps(model: nn.Module) -> float:
    return next(m.eps for m in model.modules() if isinstance(m, nn.BatchNorm2d))
