"""Weight files in and out, safely: local paths or URLs (cached, SHA-256 checked), safetensors with metadata, and
PyTorch checkpoints read with ``weights_only=True`` so that a file can never run code.

A converted weight file (see :mod:`mobilenet.convert`) is a safetensors file whose metadata holds one JSON entry,
``"mobilenet"``::

    {"model": "mobilenet_v2",
     "options": {"alpha": 0.35, "num_classes": 1000, "padding": "same", "bn_eps": 0.001, ...},
     "preprocessing": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
     "source": {"library": "keras", "model": "MobileNetV2", "file": "...", "sha256": "..."}}

``options`` are the builder arguments the weights need (the source's architecture details: TF "same" padding,
BN eps, ReLU6, channel rounding); :func:`create_model_with_weights` applies them, so a converted file just works.
``preprocessing`` is what the source expects of an RGB image scaled to [0, 1]: ``(x - mean) / std`` per channel.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from torch import nn

from .errors import MobileNetError
from .normalization import IMAGENET_MEAN, IMAGENET_STD
from .statedict import load_strict

METADATA_KEY = "mobilenet"

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "relu6": nn.ReLU6}
# Builder arguments a weight file may set; anything else is refused rather than silently ignored.
OPTION_NAMES = ("alpha", "resolution", "num_classes", "in_chans", "rounding", "padding", "bn_eps", "bn_momentum",
                "act")
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def cache_dir() -> Path:
    """Where downloaded weights are kept: ``$MOBILENET_CACHE``, else ``$XDG_CACHE_HOME/mobilenet``, else
    ``~/.cache/mobilenet``."""
    if os.environ.get("MOBILENET_CACHE"):
        return Path(os.environ["MOBILENET_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mobilenet"


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file, as 64 lowercase hex digits."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(partial(f.read, 1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(source: str | os.PathLike, sha256: str | None = None, cache: str | os.PathLike | None = None,
          progress: bool = True) -> Path:
    """A local path for ``source``, a file path or an http(s)/file URL, with its SHA-256 checked when given.

    A URL is downloaded once into ``cache`` (default :func:`cache_dir`) and reused while its checksum still
    matches; the download goes to a temporary file that is renamed only after the checksum passed, so a broken or
    tampered download never lands in the cache.

    Raises:
        MobileNetError: the file is missing, the download fails (offline, HTTP error) or the checksum differs.
    """
    expected = _check_digest(sha256)
    text = str(source)
    scheme = urllib.parse.urlparse(text).scheme.lower()
    if scheme not in ("http", "https", "file"):
        path = Path(text).expanduser()
        if not path.is_file():
            raise MobileNetError(f"weights file {text!r} not found")
        _verify(path, expected, text)
        return path
    name = Path(urllib.parse.unquote(urllib.parse.urlparse(text).path)).name or "weights"
    folder = Path(cache) if cache is not None else cache_dir()
    # Two URLs with the same file name must not share a cache entry.
    target = folder / hashlib.sha256(text.encode()).hexdigest()[:12] / name
    if target.is_file() and (expected is None or file_sha256(target) == expected):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            _download(text, out, progress)
        _verify(Path(tmp), expected, text)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def _download(url: str, out, progress: bool) -> None:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            bar = None
            if progress:
                from tqdm import tqdm
                bar = tqdm(total=total, unit="B", unit_scale=True, desc=f"downloading {Path(url).name}",
                           leave=False, disable=None)
            for chunk in iter(partial(response.read, 1 << 20), b""):
                out.write(chunk)
                if bar is not None:
                    bar.update(len(chunk))
            if bar is not None:
                bar.close()
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or e
        raise MobileNetError(f"could not download {url} ({reason}); if this machine is offline, download the file "
                             f"elsewhere and pass its local path") from None


def _check_digest(sha256: str | None) -> str | None:
    if sha256 is None:
        return None
    digest = str(sha256).strip().lower()
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise MobileNetError(f"weights_sha256 must be 64 hex digits, got {sha256!r}")
    return digest


def _verify(path: Path, expected: str | None, label: str) -> None:
    if expected is not None:
        actual = file_sha256(path)
        if actual != expected:
            raise MobileNetError(f"SHA-256 mismatch for {label}: expected {expected}, got {actual}; the file is "
                                 f"corrupt, truncated or not the one you meant")


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

