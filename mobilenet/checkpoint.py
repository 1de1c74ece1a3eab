"""Checkpoints that survive a crash at any moment, load without unpickling code, and fail loudly on a wrong model.

A checkpoint is a plain dictionary of tensors and Python scalars, strings, lists and dicts, so it loads with
``torch.load(..., weights_only=True)``. It is written to a temporary file in the same directory, flushed and
fsynced, then renamed over the previous one with ``os.replace`` (atomic on POSIX), so a reader always sees either
the previous complete checkpoint or the new complete one, whatever happens to the writing process.
"""

from __future__ import annotations

import io
import os
import pickle
import random
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .errors import MobileNetError

FORMAT = "mobilenet-checkpoint"
VERSION = 1
_MAX_LISTED = 12  # mismatched keys named in an error before "... and N more"


def save_atomic(obj: dict, path: str | os.PathLike) -> Path:
    """Writes ``obj`` to ``path`` with ``torch.save`` so that ``path`` is never left partly written.

    The bytes go to a temporary file next to ``path`` (same file system, so the rename is atomic), are flushed and
    fsynced, and the file is renamed over ``path``; the directory is fsynced so the rename itself survives a power
    cut. If anything fails, the temporary file is removed and the previous ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(buffer.getbuffer())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)
    return path


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # some platforms cannot open a directory; the rename is still atomic there
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Loads a checkpoint written by the training code, with ``weights_only=True`` (no code can run).

    Raises:
        MobileNetError: the file is missing, truncated, not a checkpoint of this package, or holds objects other
            than tensors and plain Python types.
    """
    path = Path(path)
    if not path.is_file():
        raise MobileNetError(f"checkpoint {str(path)!r} not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise MobileNetError(f"checkpoint {str(path)!r} holds objects that are not plain data; refused to load "
                             f"it ({first})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as e:
        raise MobileNetError(f"checkpoint {str(path)!r} is truncated or not a PyTorch file ({e})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT or "model" not in ckpt:
        raise MobileNetError(f"{str(path)!r} is not a mobilenet training checkpoint (no 'format': {FORMAT!r})")
    return ckpt


def load_state(model: nn.Module, state: dict, what: str = "checkpoint") -> None:
    """``model.load_state_dict(state)``, with every missing, unexpected and wrong-shaped key in one error.

    Raises:
        MobileNetError: the state does not fit the model; the message lists the mismatches with both shapes.
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: {what} {list(state[k].shape)} vs model {list(own[k].shape)}"
              for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        name = getattr(model, "name", type(model).__name__)
        parts = []
        for label, keys in (("shape mismatches", shapes), ("missing in the " + what, missing),
                            ("not in the model", unexpected)):
            if keys:
                shown = "; ".join(keys[:_MAX_LISTED])
                more = f"; ... and {len(keys) - _MAX_LISTED} more" if len(keys) > _MAX_LISTED else ""
                parts.append(f"{len(keys)} {label}: {shown}{more}")
        raise MobileNetError(f"the {what} does not fit model {name} (a different architecture, alpha or class "
                             f"count?): " + " | ".join(parts))
    model.load_state_dict(state)


def rng_state() -> dict:
    """The torch, NumPy and Python random generators' states, as tensors and plain types."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, py_state, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": {"version": version, "state": list(py_state), "gauss": py_gauss},
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict) -> None:
    """Restores what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
