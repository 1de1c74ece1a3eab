"""Weight files in and out, safely: safetensors with metadata, and PyTorch checkpoints read with
``weights_only=True`` so that a file can never run code. Fetching (URLs, cache, checksums) is
:mod:`mobilenet.download`; building a model from a file is :mod:`mobilenet.models.pretrained`.

A converted weight file (see :mod:`mobilenet.convert`) is a safetensors file whose metadata holds one JSON entry,
``"mobilenet"``::

    {"model": "mobilenet_v2",
     "options": {"alpha": 0.35, "num_classes": 1000, "padding": "same", "bn_eps": 0.001, ...},
     "preprocessing": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
     "source": {"library": "keras", "model": "MobileNetV2", "file": "...", "sha256": "..."}}

``options`` are the builder arguments the weights need (the source's architecture details: TF "same" padding,
BN eps, ReLU6, channel rounding); :func:`mobilenet.models.pretrained.create_model_with_weights` applies them, so
a converted file just works.
``preprocessing`` is what the source expects of an RGB image scaled to [0, 1]: ``(x - mean) / std`` per channel.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import torch

from .errors import MobileNetError

METADATA_KEY = "mobilenet"

# Builder arguments a weight file may set; anything else is refused rather than silently ignored.
OPTION_NAMES = ("alpha", "resolution", "num_classes", "in_chans", "rounding", "padding", "bn_eps", "bn_momentum",
                "act")
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def save_weights(path: str | os.PathLike, state_dict: dict[str, torch.Tensor], info: dict) -> Path:
    """Writes a state dict as safetensors with ``info`` (model, options, preprocessing, source) as metadata."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    save_file(tensors, str(path), metadata={METADATA_KEY: json.dumps(info, sort_keys=True)})
    return path


def load_weights(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """Reads a weight file into ``(state_dict, info)`` without running any code from it.

    Accepts safetensors (``info`` from its metadata, or ``{}``), PyTorch files read with ``weights_only=True``
    (a plain state dict, a dict holding one under ``state_dict``/``model``, or a training checkpoint of this
    package, whose ``model_kwargs``, ``mean`` and ``std`` become ``info``).

    Raises:
        MobileNetError: unreadable file, a pickle that holds anything but tensors and plain data (refused, never
            executed), a Keras file (convert it first), or no tensors found.
    """
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(16)
    if head.startswith(_HDF5_MAGIC):
        raise MobileNetError(f"{str(path)!r} is a Keras/HDF5 file; convert it first: mobilenet convert {path} "
                             f"--from keras --model NAME --out OUT.safetensors")
    if _looks_like_safetensors(head):
        return _load_safetensors(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        detail = _unpickler_detail(str(e))
        if "global" not in detail.lower():  # not a pickle of weights at all: bad bytes, an unknown opcode
            raise MobileNetError(f"{str(path)!r} is not a readable safetensors or PyTorch weights file "
                                 f"({detail})") from None
        raise MobileNetError(f"refused to load {str(path)!r}: it holds Python objects other than tensors and plain "
                             f"data, which could run code; nothing from it was executed ({detail})") from None
    except Exception as e:  # torch.load fails on damaged files with many types (SafetensorError
        # for an empty file, ValueError, RuntimeError, BadZipFile, ...): all mean the file cannot be read
        raise MobileNetError(f"{str(path)!r} is not a readable safetensors or PyTorch weights file "
                             f"({type(e).__name__}: {e})") from None
    return _unwrap(obj, path)


def _unpickler_detail(message: str) -> str:
    # torch wraps the restricted unpickler's reason ("Unsupported global: GLOBAL builtins.open ...") in advice.
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if "WeightsUnpickler error:" in line:
            rest = line.split("WeightsUnpickler error:", 1)[1].strip()
            return (rest or (lines[i + 1] if i + 1 < len(lines) else ""))[:200]
    return (lines[0] if lines else "unpickling failed")[:200]


def _looks_like_safetensors(head: bytes) -> bool:
    # An 8-byte little-endian header length, then the JSON header.
    return len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 100_000_000


def _load_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise MobileNetError(f"{str(path)!r} is not a readable safetensors file ({e})") from None
    try:
        info = json.loads(metadata[METADATA_KEY]) if METADATA_KEY in metadata else {}
    except json.JSONDecodeError:
        raise MobileNetError(f"{str(path)!r} has unreadable {METADATA_KEY!r} metadata") from None
    _check_info(info, path)
    return state, info


def _check_info(info, path: Path) -> None:
    """The metadata's shape (see the module docstring), so that a damaged file fails here with its name."""
    pre = info.get("preprocessing", {}) if isinstance(info, dict) else None
    ok = (isinstance(info, dict) and isinstance(info.get("model", ""), str)
          and isinstance(info.get("options", {}), dict) and isinstance(pre, dict)
          and all(isinstance(pre.get(k, [1.0]), list) and pre.get(k, [1.0])
                  and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in pre.get(k, [1.0]))
                  for k in ("mean", "std")))
    if not ok:
        raise MobileNetError(f"{str(path)!r} has {METADATA_KEY!r} metadata of the wrong shape (expected "
                             f"{{'model': str, 'options': {{...}}, 'preprocessing': {{'mean': [...], 'std': [...]}}}})")


def _unwrap(obj, path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    if isinstance(obj, dict) and obj.get("format") == "mobilenet-checkpoint" and isinstance(obj.get("model"), dict):
        info = {"options": {k: v for k, v in (obj.get("model_kwargs") or {}).items() if k in OPTION_NAMES}}
        if (obj.get("config") or {}).get("model"):
            info["model"] = obj["config"]["model"]
        if obj.get("mean") and obj.get("std"):
            info["preprocessing"] = {"mean": list(obj["mean"]), "std": list(obj["std"])}
        return _tensors(obj["model"], path), info
    if isinstance(obj, dict) and not _is_state_dict(obj):
        for key in ("state_dict", "model_state_dict", "model", "module"):
            if isinstance(obj.get(key), dict) and _is_state_dict(obj[key]):
                return _tensors(obj[key], path), {}
    return _tensors(obj, path), {}


def _is_state_dict(obj) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _tensors(obj, path: Path) -> dict[str, torch.Tensor]:
    if not _is_state_dict(obj):
        raise MobileNetError(f"{str(path)!r} holds no state dict (a dict of tensor names to tensors)")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in obj.items()}
