"""The freed-memory setting: after it, a large block freed and allocated again costs no page faults."""

import platform
import resource
import subprocess
import sys

import pytest

glibc = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                           reason="the setting applies to glibc's malloc only")

# Allocates and frees 64 MiB (above glibc's largest mmap threshold) five times and prints the minor page faults of
# the last three; each child starts from glibc's defaults. Two rounds come first because the heap settles in two:
# an aligned allocation asks for a little more than the block it freed, so the second one may still grow the heap.
CHILD = """
import resource, sys, torch
from mobilenet.heap import retain_freed_memory
print(retain_freed_memory() if sys.argv[1] == "on" else False)
def touch():
    torch.ones(16 * 2**20).sum()
touch()
touch()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    touch()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str, env=None) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, check=True,
                         env=env).stdout.split()
    return out[0], int(out[1])


def _small_pages_only() -> bool:
    # With transparent huge pages always on, a fresh 64 MiB mapping faults in 2 MiB at a time: glibc's default
    # then costs few faults too, and only the retained case can be checked.
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            return "[always]" not in f.read()
    except OSError:
        return True


PAGES = 3 * 64 * 2**20 // resource.getpagesize()  # what three fresh 64 MiB mappings fault in with 4 KiB pages


@glibc
def test_freed_memory_is_reused_without_page_faults():
    applied, faults = _faults("on")
    assert applied == "True"
    assert faults < PAGES // 20
    if _small_pages_only():
        assert _faults("off")[1] > PAGES // 2  # glibc's default: every allocation is mapped afresh


@glibc
def test_the_environment_switches_it_off():
    import os
    env = {**os.environ, "MOBILENET_RETAIN_HEAP": "0"}
    applied, faults = _faults("on", env)
    assert applied == "False"
    if _small_pages_only():
        assert faults > PAGES // 2
