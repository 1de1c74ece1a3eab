"""Keeping freed memory in the process, so that a model's activations are not page-faulted in on every call.

glibc's ``malloc`` serves a large block (always from 32 MiB, and from 128 KiB until its adaptive threshold has
risen) with a fresh ``mmap`` and hands it back to the kernel on ``free``. PyTorch allocates a model's activations on
every forward pass, so each call of a large batch maps new pages and takes one page fault per 4 KiB page of
activations. Measured on V1 at 224 px, batch 32, bf16 (``torch-bf16``, 2 threads, Intel Xeon with AMX): 43,841
minor faults per call and 85 ms per call; with freed memory kept, 0 faults and 41 ms. ONNX Runtime and OpenVINO
allocate from their own arenas and never pay this, so without the setting a benchmark compares allocators, not
kernels. Training pays it too: eager fp32 MobileNetV2 steps at 224 px, batch 32, ran at 16.7 images/s, 24.2 with
the setting (same machine, ``mobilenet bench-train``).

:func:`retain_freed_memory` asks glibc to serve large blocks from its heap (``M_MMAP_MAX = 0``) and never to trim
it (``M_TRIM_THRESHOLD``), so a block freed at the end of one call is reused by the next: what an arena allocator
such as jemalloc or tcmalloc does. The cost is that the process keeps its peak heap until it exits. It is
process-wide, so every backend (the eager baseline included) runs under it once any runner is built; training
and ``bench-train`` switch it on too. Set
``MOBILENET_RETAIN_HEAP=0`` to keep glibc's defaults; on other C libraries it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import platform

ENV = "MOBILENET_RETAIN_HEAP"
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # from glibc's malloc.h


@functools.cache
def retain_freed_memory() -> bool:
    """Applies the setting above once per process; returns whether it is in effect."""
    if os.environ.get(ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        # mallopt takes an int: the heap is trimmed only once 2 GiB at its top are free.
        trim = libc.mallopt(_M_TRIM_THRESHOLD, ctypes.c_int(2**31 - 1))
        mmap = libc.mallopt(_M_MMAP_MAX, ctypes.c_int(0))
    except (OSError, AttributeError):
        return False
    return bool(trim and mmap)
