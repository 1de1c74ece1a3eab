"""Files from local paths or URLs, cached and SHA-256 checked.

The download is written by hand rather than through ``torch.hub.download_url_to_file``: that function opens the URL
without a timeout (a stalled server hangs the command forever), draws its progress bar even off a terminal, and
reports a checksum mismatch as a bare ``RuntimeError``; here a stall ends after 30 s, the bar only shows on a
terminal, and every failure is one :class:`MobileNetError` that names the file.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from functools import partial
from pathlib import Path

from .errors import MobileNetError

TIMEOUT_S = 30


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
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
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
