"""Checkpoints that survive a crash at any moment, load without unpickling code, and fail loudly on a wrong model.

A checkpoint is a plain dictionary of tensors and Python scalars, strings, lists and dicts, so it loads with
``torch.load(..., weights_only=True)``. It is written to a temporary file in the same directory, flushed and
fsynced, then renamed over the previous one with ``os.replace`` (atomic on POSIX), so a reader always sees either
the previous complete checkpoint or the new complete one, whatever happens to the writing process.

Damage after the write (a disk error, a copy cut short) is caught by a SHA-256 of the bytes, appended after the
zip archive as a 40-byte trailer (``MNCKSUM1`` + digest; ``torch.load`` ignores bytes after the archive). With
``keep_previous`` the checkpoint being replaced stays beside it as ``<name>.prev.pt``, and
:func:`read_for_resume` falls back to that copy, with a warning, when the newer one is damaged.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import pickle
import random
import tempfile
from pathlib import Path

import numpy as np
import torch

from .errors import MobileNetError

log = logging.getLogger("mobilenet.checkpoint")

FORMAT = "mobilenet-checkpoint"
VERSION = 1
# The types of the fields the loaders use (when present); a file with other types is refused as a whole.
_FIELDS = {"config": dict, "model_kwargs": dict, "model": dict, "ema": (dict, type(None)), "class_names": list,
           "mean": list, "std": list, "in_chans": int, "epoch": int, "step": int, "seen": int, "history": list}
_TRAILER = b"MNCKSUM1"  # then the 32-byte SHA-256 of everything before the trailer
_TRAILER_SIZE = len(_TRAILER) + 32


def previous_path(path: str | os.PathLike) -> Path:
    """Where :func:`save_atomic` keeps the checkpoint it replaced: ``last.pt`` -> ``last.prev.pt``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def _split_trailer(data: bytes) -> tuple[bytes, bytes | None]:
    """The archive bytes and the stored digest (None for a file written without one)."""
    if len(data) > _TRAILER_SIZE and data[-_TRAILER_SIZE:-32] == _TRAILER:
        return data[:-_TRAILER_SIZE], data[-32:]
    return data, None


def _intact(path: Path) -> bool:
    try:
        payload, digest = _split_trailer(path.read_bytes())
    except OSError:
        return False
    return digest is not None and hashlib.sha256(payload).digest() == digest


def save_atomic(obj: dict, path: str | os.PathLike, keep_previous: bool = False) -> Path:
    """Writes ``obj`` to ``path`` with ``torch.save`` so that ``path`` is never left partly written.

    The bytes, followed by their SHA-256 trailer, go to a temporary file next to ``path`` (same file system, so the
    rename is atomic), are flushed and fsynced, and the file is renamed over ``path``; the directory is fsynced so
    the rename itself survives a power cut. If anything fails, the temporary file is removed and the previous
    ``path`` is untouched.

    Args:
        obj: tensors and plain Python data.
        path: the destination.
        keep_previous: first keep an intact ``path`` as :func:`previous_path` (a hard link, so ``path`` exists at
            every moment), a fallback should the new file be damaged later.

    Raises:
        MobileNetError: the file could not be written (a full disk, no permission); the message says so and that
            the previous checkpoint is unchanged.
    """
    path = Path(path)
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.write(_TRAILER + hashlib.sha256(buffer.getbuffer()).digest())
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide checkpoints from the rest of a team
        with os.fdopen(fd, "wb") as f:
            f.write(buffer.getbuffer())
            f.flush()
            os.fsync(f.fileno())
        if keep_previous and _intact(path):
            _link_over(path, previous_path(path))
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        if isinstance(e, OSError):
            raise MobileNetError(f"could not write checkpoint {str(path)!r} ({e.strerror or e}); the previous "
                                 f"checkpoint there is unchanged") from e
        raise
    _fsync_dir(path.parent)
    return path


def _link_over(src: Path, dst: Path) -> None:
    """Makes ``dst`` another name of ``src``'s bytes, replacing ``dst`` atomically (a copy where links fail)."""
    tmp = dst.with_name(f".{dst.name}.link")
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    try:
        os.link(src, tmp)
    except OSError:  # no hard links on this file system
        tmp.write_bytes(src.read_bytes())
    os.replace(tmp, dst)


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
        payload, digest = _split_trailer(path.read_bytes())
    except OSError as e:
        raise MobileNetError(f"cannot read checkpoint {str(path)!r} ({e.strerror or e})") from None
    if digest is not None and hashlib.sha256(payload).digest() != digest:
        raise MobileNetError(f"checkpoint {str(path)!r} is corrupted: its SHA-256 does not match the one stored "
                             f"when it was written")
    try:
        ckpt = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise MobileNetError(f"checkpoint {str(path)!r} holds objects that are not plain data; refused to load "
                             f"it ({first})") from None
    except Exception as e:  # damaged archives fail in torch.load with many types (ValueError: negative
        # seek value, RuntimeError, EOFError, BadZipFile, ...): all of them mean this file cannot be read
        raise MobileNetError(f"checkpoint {str(path)!r} is truncated or not a PyTorch file ({type(e).__name__}: "
                             f"{e})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT or "model" not in ckpt:
        raise MobileNetError(f"{str(path)!r} is not a mobilenet training checkpoint (no 'format': {FORMAT!r})")
    bad = [k for k, kind in _FIELDS.items() if k in ckpt and not isinstance(ckpt[k], kind)]
    bad += [k for k in ("model", "ema") if isinstance(ckpt.get(k), dict)
            and not all(isinstance(n, str) and isinstance(v, torch.Tensor) for n, v in ckpt[k].items())]
    if bad:
        raise MobileNetError(f"checkpoint {str(path)!r} is damaged or was not written by this package: "
                             f"{', '.join(bad)} of the wrong type")
    return ckpt


def read_for_resume(path: str | os.PathLike, missing_ok: bool = False) -> tuple[dict | None, Path]:
    """:func:`read_checkpoint`, falling back to the kept previous checkpoint when ``path`` is missing or damaged.

    Args:
        path: the checkpoint to resume from (``last.pt``).
        missing_ok: return ``(None, path)`` when neither file exists: a run stopped before its first checkpoint
            then starts again from the beginning.

    Returns:
        ``(checkpoint, the file it came from)``.

    Raises:
        MobileNetError: no usable checkpoint (the message gives the reason for each file tried).
    """
    path, previous = Path(path), previous_path(path)
    if missing_ok and not path.exists() and not previous.exists():
        return None, path
    try:
        return read_checkpoint(path), path
    except MobileNetError as e:
        if not previous.is_file():
            raise
        first = str(e)
    try:
        ckpt = read_checkpoint(previous)
    except MobileNetError as second:
        raise MobileNetError(f"{first}; the previous checkpoint cannot be used either: {second}") from None
    log.warning("%s; resuming from the previous checkpoint %s (step %s) instead", first, previous, ckpt.get("step"))
    return ckpt, previous


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
