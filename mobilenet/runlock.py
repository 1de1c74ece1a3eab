"""One training run per output directory: a ``.lock`` file that names its owner and dies with it.

Two runs writing ``last.pt`` and the logs of one directory would interleave their files, so the second refuses to
start. The lock is an advisory ``flock`` on ``<output>/.lock``, which the kernel releases when the owner exits in
any way (kill -9 included), so a lock left by a dead run never blocks the next one; the file holds the owner's PID
and host for the error message. Where ``flock`` does not exist (Windows) the file itself is the lock, and a lock
whose PID is no longer running on this host is taken over as stale. ``filelock`` takes the same ``flock`` but
truncates the file and records no owner, so its timeout could not say which process on which host holds the run.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

from .errors import MobileNetError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

log = logging.getLogger("mobilenet.train")

LOCK_NAME = ".lock"


def _owner(path: Path) -> tuple[int | None, str]:
    try:
        pid, _, host = path.read_text().strip().partition(" ")
        return int(pid), host
    except (OSError, ValueError):
        return None, ""


def pid_alive(pid: int) -> bool:
    """Whether a process with this PID runs on this machine."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    except OSError:
        return False
    return True


class RunLock:
    """Holds ``<directory>/.lock`` while a run writes there; a context manager.

    Raises:
        MobileNetError: on entry, when another live run holds the directory.
    """

    def __init__(self, directory: str | os.PathLike):
        self.path = Path(directory) / LOCK_NAME
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def _refuse(self, pid: int | None, host: str):
        who = f"process {pid}" + (f" on {host}" if host else "") if pid else "another process"
        raise MobileNetError(f"output {str(self.path.parent)!r} is in use by another training run ({who}, lock "
                             f"{str(self.path)!r}); wait for it to finish or choose another --output")

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(10):  # retried only when the file changed under us (another run released or took it)
            if fcntl is None:
                if self._acquire_exclusive():
                    return
                continue
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                self._refuse(*_owner(self.path))
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:  # released and removed between open and flock
                same = False
            if not same:
                os.close(fd)
                continue
            pid, host = _owner(self.path)
            if pid is not None and pid != os.getpid():
                log.warning("taking over the lock of run directory %s from process %s, which is no longer running",
                            self.path.parent, pid)
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
            self._fd = fd
            return
        raise MobileNetError(f"could not lock {str(self.path)!r}: it keeps changing (another run starting?)")

    def _acquire_exclusive(self) -> bool:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            pid, host = _owner(self.path)
            if pid is None or (host in ("", socket.gethostname()) and not pid_alive(pid)):
                log.warning("removing the stale lock %s (process %s is no longer running)", self.path, pid)
                try:
                    os.unlink(self.path)
                except FileNotFoundError:
                    pass
                return False
            self._refuse(pid, host)
        os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.unlink(self.path)  # before unlocking, so a waiting run's inode check sees the change
        except FileNotFoundError:
            pass
        os.close(self._fd)  # closing releases the flock
        self._fd = None
