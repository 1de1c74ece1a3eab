"""Keras' ``MobileNet`` (every α), ``MobileNetV2`` and ``MobileNetV3Large/Small`` weights: ``.h5`` (Keras 2 and 3
legacy files, the published application weights), ``.weights.h5`` (Keras 3) and ``.keras`` archives.

What Keras' architectures differ in from ours, recorded as model options: TF "same" padding (stride-2 layers pad
(0, 1) at even sides, more at the bottom/right), BN eps 1e-3 (momentum 0.99 for V1, 0.999 for V2/V3, i.e. PyTorch
momentum 0.01 and 0.001), ReLU6 in V1, V1 widths ``int(α·c)`` (the ``"keras"`` rounding). Classifiers that Keras
writes as a 1×1 conv (V1's ``conv_preds``, V3's ``conv_2`` and ``logits``) become our Linear layers. Keras V1/V2
expect inputs in [-1, 1] (``preprocess_input``), V3 has the same scaling built in (a Rescaling layer on 0..255
inputs): all three are mean = std = 0.5 on an image in [0, 1].

Keras 3 ``.weights.h5`` files do not store layer names: each layer is ``layers/<class>_<n>``, the n-th layer of its
class in model order; legacy ``.h5`` files are loaded by the order of their weighted layers, as Keras itself does, so
files written under Keras 2's layer names (``Conv/BatchNorm``, ``expanded_conv/depthwise``, …) load too.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import MobileNetError
from ..layers import ConvBNAct
from ..normalization import INCEPTION_MEAN, INCEPTION_STD
from .common import Link, SourceModel, build, conv_bn, has_expand, has_se, import_state

# The Keras layer class behind each kind of link, as Keras 3 names it in a .weights.h5 file.
KERAS_CLASS = {"conv": "conv2d", "conv_bias": "conv2d", "conv_as_linear": "conv2d", "dwconv": "depthwise_conv2d",
               "bn": "batch_normalization", "linear": "dense"}


def _v1_links(model: nn.Module) -> list[Link]:
    links = conv_bn("features.0", "conv1", "conv1_bn")
    for k in range(1, len(model.features)):
        links += conv_bn(f"features.{k}.dw", f"conv_dw_{k}", f"conv_dw_{k}_bn", depthwise=True)
        links += conv_bn(f"features.{k}.pw", f"conv_pw_{k}", f"conv_pw_{k}_bn")
    return links + [Link("classifier", "conv_preds", "conv_as_linear")]


def _v2_links(model: nn.Module) -> list[Link]:
    links = conv_bn("features.0", "Conv1", "bn_Conv1")
    last = len(model.features) - 1
    for k in range(1, last):
        p, q = f"features.{k}", "expanded_conv_" if k == 1 else f"block_{k - 1}_"
        if has_expand(model.features[k]):
            links += conv_bn(f"{p}.expand", f"{q}expand", f"{q}expand_BN")
        links += conv_bn(f"{p}.dw", f"{q}depthwise", f"{q}depthwise_BN", depthwise=True)
        links += conv_bn(f"{p}.project", f"{q}project", f"{q}project_BN")
    links += conv_bn(f"features.{last}", "Conv_1", "Conv_1_bn")
    return links + [Link("classifier", "predictions", "linear")]


def _v3_links(model: nn.Module) -> list[Link]:
    links = conv_bn("features.0", "conv", "conv_bn")
    last = len(model.features) - 1
    for k in range(1, last):
        block, p, q = model.features[k], f"features.{k}", "expanded_conv_" if k == 1 else f"expanded_conv_{k - 1}_"
        if has_expand(block):
            links += conv_bn(f"{p}.expand", f"{q}expand", f"{q}expand_bn")
        links += conv_bn(f"{p}.dw", f"{q}depthwise", f"{q}depthwise_bn", depthwise=True)
        if has_se(block):
            links += [Link(f"{p}.se.fc1", f"{q}squeeze_excite_conv", "conv_bias"),
                      Link(f"{p}.se.fc2", f"{q}squeeze_excite_conv_1", "conv_bias")]
        links += conv_bn(f"{p}.project", f"{q}project", f"{q}project_bn")
    assert isinstance(model.features[last], ConvBNAct)
    links += conv_bn(f"features.{last}", "conv_1", "conv_1_bn")
    return links + [Link("head.0", "conv_2", "conv_as_linear"), Link("classifier", "logits", "conv_as_linear")]


_TF = dict(mean=INCEPTION_MEAN, std=INCEPTION_STD)
_V23_OPTIONS = {"padding": "same", "bn_eps": 1e-3, "bn_momentum": 0.001}
MODELS = {
    "MobileNet": SourceModel(
        "MobileNet", "mobilenet_v1", _v1_links, "conv_preds.weight", ("conv_pw_13.weight", 1024),
        options={"padding": "same", "bn_eps": 1e-3, "bn_momentum": 0.01, "act": "relu6", "rounding": "keras"},
        **_TF),
    "MobileNetV2": SourceModel(
        "MobileNetV2", "mobilenet_v2", _v2_links, "predictions.weight", ("block_16_project.weight", 320),
        options=_V23_OPTIONS, **_TF),
    "MobileNetV3Large": SourceModel(
        "MobileNetV3Large", "mobilenet_v3_large", _v3_links, "logits.weight",
        ("expanded_conv_14_project.weight", 160), options=_V23_OPTIONS, **_TF),
    "MobileNetV3Small": SourceModel(
        "MobileNetV3Small", "mobilenet_v3_small", _v3_links, "logits.weight",
        ("expanded_conv_10_project.weight", 96), options=_V23_OPTIONS, **_TF),
}


def read_layers(path: str | Path) -> tuple[str, list[tuple[str, list[np.ndarray]]]]:
    """The weighted layers of a Keras file as ``(format, [(name, arrays), ...])``.

    ``format`` is ``"legacy"`` (``.h5``: layers in model order, under their own names) or ``"keras3"``
    (``.weights.h5`` / ``.keras``: ``<class>_<n>`` names, in no particular order).
    """
    try:
        import h5py
    except ImportError:
        raise MobileNetError("reading Keras files needs h5py: pip install h5py (or the 'interop' extra)") from None
    path = Path(path)
    if not path.is_file():
        raise MobileNetError(f"Keras file {str(path)!r} not found")
    source: str | io.BytesIO = str(path)
    if zipfile.is_zipfile(path):  # a .keras archive: the weights are its model.weights.h5
        with zipfile.ZipFile(path) as archive:
            if "model.weights.h5" not in archive.namelist():
                raise MobileNetError(f"{str(path)!r} is a zip archive without model.weights.h5, not a .keras file")
            source = io.BytesIO(archive.read("model.weights.h5"))
    try:
        with h5py.File(source, "r") as f:
            if "layers" in f and "layer_names" not in f.attrs:
                return "keras3", _keras3_layers(f["layers"])
            root = f["model_weights"] if "model_weights" in f else f
            if "layer_names" not in root.attrs:
                raise MobileNetError(f"{str(path)!r} is an HDF5 file but not Keras weights (no layer_names, no "
                                     f"layers group)")
            return "legacy", _legacy_layers(root)
    except MobileNetError:
        raise
    except (OSError, RuntimeError, KeyError, ValueError, TypeError, AttributeError, IndexError) as e:
        # h5py reports damaged structures with any of these (RuntimeError: "bad symbol table node signature")
        raise MobileNetError(f"{str(path)!r} is not a readable HDF5/Keras file ({type(e).__name__}: {e})") from None


def _text(value) -> str:
    return value.decode("utf8") if isinstance(value, bytes) else str(value)


def _legacy_layers(root) -> list[tuple[str, list[np.ndarray]]]:
    layers = []
    for name in map(_text, root.attrs["layer_names"]):
        names = [_text(w) for w in root[name].attrs.get("weight_names", [])]
        if names:
            layers.append((name, [np.asarray(root[name][w]) for w in names]))
    return layers


def _keras3_layers(group) -> list[tuple[str, list[np.ndarray]]]:
    layers = []
    for name in group:
        variables = group[name].get("vars")
        if variables is not None and len(variables):
            layers.append((name, [np.asarray(variables[str(i)]) for i in range(len(variables))]))
    return layers


def read_resolution(path: str | Path) -> int | None:
    """The square input side a full-model Keras file (``.h5`` with a model config, ``.keras``) was built for."""
    import json

    import h5py

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                config = json.loads(archive.read("config.json"))
        else:
            with h5py.File(path, "r") as f:
                raw = f.attrs.get("model_config")
                config = json.loads(raw) if raw is not None else None
        for layer in (config or {}).get("config", {}).get("layers", []):
            if layer.get("class_name") == "InputLayer":
                shape = layer["config"].get("batch_shape") or layer["config"].get("batch_input_shape")
                sides = [s for s in shape[1:] if s not in (None, 3)]
                return sides[0] if len(sides) == 2 and sides[0] == sides[1] else None
    except (KeyError, TypeError, ValueError, OSError, IndexError, RuntimeError, AttributeError):
        return None  # no readable input shape: the caller needs --resolution
    return None


def to_torch_layout(path: str | Path, spec: SourceModel) -> dict[str, torch.Tensor]:
    """A Keras file's weights as a PyTorch-layout state dict keyed ``<Keras 3 layer name>.<tensor>``.

    Layers are matched to ``spec``'s map in model order (per class for Keras 3 files); layers the map does not use
    are kept under their own names, so the import reports them.
    """
    fmt, layers = read_layers(path)
    wanted = [link for link in spec.links(build(spec, 1.0, 1000))]  # the layer order does not depend on α
    out: dict[str, torch.Tensor] = {}
    if fmt == "keras3":
        by_name = dict(layers)
        seen: dict[str, int] = {}
        for link in wanted:
            cls = KERAS_CLASS[link.kind]
            n = seen.get(cls, 0)
            seen[cls] = n + 1
            name = f"{cls}_{n}" if n else cls
            arrays = by_name.pop(name, None)
            if arrays is not None:
                out.update(_convert(link, arrays, name))
        leftovers = by_name.items()
    else:
        for link, (name, arrays) in zip(wanted, layers):
            out.update(_convert(link, arrays, name))
        leftovers = layers[len(wanted):]
    for name, arrays in leftovers:
        for i, a in enumerate(arrays):
            out[f"{name}.var{i}"] = torch.from_numpy(np.array(a))
    return out


def _convert(link: Link, arrays: list[np.ndarray], name: str) -> dict[str, torch.Tensor]:
    """One Keras layer's variables in PyTorch's layout, keyed by the link's Keras name."""
    t = [torch.from_numpy(np.array(a, dtype=np.float32)) for a in arrays]
    label = f"Keras layer {name!r}" + (f" (expected {link.theirs})" if name != link.theirs else "")
    expected = {"conv": 1, "dwconv": 1, "conv_bias": 2, "conv_as_linear": 2, "linear": 2, "bn": 4}[link.kind]
    if len(t) != expected or (link.kind != "bn" and t[0].dim() != (2 if link.kind == "linear" else 4)):
        raise MobileNetError(f"{label} holds {len(t)} arrays of shapes {[tuple(a.shape) for a in t]}, not a "
                             f"{link.kind} layer's: is this the right --model?")
    p = link.theirs
    if link.kind == "bn":
        return dict(zip((f"{p}.weight", f"{p}.bias", f"{p}.running_mean", f"{p}.running_var"), t))
    if link.kind == "linear":  # Dense kernel (in, out)
        return {f"{p}.weight": t[0].T.contiguous(), f"{p}.bias": t[1]}
    if link.kind == "dwconv":  # (kh, kw, in, multiplier) -> (in * multiplier, 1, kh, kw)
        kh, kw, c, m = t[0].shape
        return {f"{p}.weight": t[0].permute(2, 3, 0, 1).reshape(c * m, 1, kh, kw).contiguous()}
    out = {f"{p}.weight": t[0].permute(3, 2, 0, 1).contiguous()}  # (kh, kw, in, out) -> (out, in, kh, kw)
    if len(t) == 2:
        out[f"{p}.bias"] = t[1]
    return out


def import_keras(path: str | Path, model: str, alpha: float | None = None, resolution: int | None = None,
                 drop_background: bool = True) -> tuple[nn.Module, dict]:
    """Our model loaded from a Keras file of ``model`` (a key of ``MODELS``), and its metadata."""
    if model not in MODELS:
        raise MobileNetError(f"unknown Keras model {model!r}; expected one of {', '.join(MODELS)}")
    spec = MODELS[model]
    resolution = resolution or read_resolution(path)
    return import_state(spec, to_torch_layout(path, spec), alpha, resolution, drop_background)
