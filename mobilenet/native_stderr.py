"""Lines that native libraries write straight to the process's stderr (file descriptor 2), below Python's reach."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile


@contextlib.contextmanager
def dropping(*prefixes: str):
    """Drops the stderr lines starting with one of ``prefixes`` that C or C++ code writes inside the block (such as
    torch.profiler's "USDT: ... profiler_start" or TensorFlow Lite's "INFO: Created ... delegate"): noise between a
    command's own output. Every other line written meanwhile is passed on when the block ends."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            for line in sink.read().decode(errors="replace").splitlines(keepends=True):
                if not line.startswith(prefixes):
                    sys.stderr.write(line)
