"""The one home for wall-clock timing: every benchmark, latency search and ETA in the project times through here.

Two primitives, both excluding warm-up and both reporting medians with their spread:

* :func:`measure` times one callable on its own. It is ``torch.utils.benchmark``'s ``blocked_autorange`` (blocks
  of calls sized so that timer overhead vanishes, threads pinned to torch's current setting), because nothing else
  runs in between.
* :func:`alternate` times several callables "as if each ran alone": in blocks of calls per callable, the blocks
  alternated across rounds (order rotated each round), with untimed settling calls before every block.
  ``torch.utils.benchmark`` cannot do this: it times one statement per call and has no notion of rounds.

Why blocks and not one call of each per round: a runtime's worker threads keep spinning for a while after its call
returns (torch's OpenMP pool most of all), so the next runtime's first call shares the cores with them and looks
twice as slow as it is. The settling calls absorb that and wake the runtime's own pool, and the alternation still
puts every callable in the same time windows, so ratios survive a machine whose load changes.

:func:`machine_name` and :func:`library_versions` name what a measurement was taken on (benchmark files, the
``auto`` backend's cache).
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

# For callables from different runtimes, before every block: untimed calls for at least 50 ms (two at least). They
# outlast the previous runtime's threads that keep spinning after its last call and wake this runtime's own pool and
# caches. How long each runtime's idle threads spin (2-core Zen 5 EPYC): ONNX Runtime 31 ms, torch's OpenMP 6 ms,
# OpenVINO under 1 ms. With 20 ms, a block that followed ONNX Runtime shared a core with its spinning worker for its
# first calls: ONNX Runtime int8 V2 at batch 1 measured 4-5 ms in a tenth of its calls instead of 0.9 (p75 1.33-1.44
# ms against 0.97-1.01 with 50 ms). Measured with ONNX Runtime right after torch blocks against ONNX Runtime alone
# (tests/test_timing.py): within 2 % with settling, 2.1x slower with one call of each per round. A sleep before the
# block instead of calls did not help.
SETTLE, SETTLE_TIME = 2, 0.05


@dataclass(frozen=True)
class Timing:
    """Seconds per call of one callable: every timed call, and the per-call mean of every block (round)."""

    times: list[float]
    blocks: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def lower_quartile(self) -> float:
        """The time a quarter of the calls beat: for ranking callables on a shared machine, where interruptions only
        ever add time, steadier than the median when they hit half the calls."""
        if len(self.times) < 4:
            return min(self.times)
        return statistics.quantiles(self.times, n=4)[0]

    @property
    def spread(self) -> float:
        """The interquartile range relative to the median (0.1 = the middle half of calls lies within 10 %)."""
        if len(self.times) < 4:
            return (max(self.times) - min(self.times)) / self.median
        q1, _, q3 = statistics.quantiles(self.times, n=4)
        return (q3 - q1) / self.median


def time_call(fn: Callable[[], object], warmup: int, repeats: int) -> list[float]:
    """Seconds of each of ``repeats`` calls of ``fn()`` after ``warmup`` untimed ones (one call per sample, for
    callables slow enough that the timer's resolution does not matter)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def measure(fn: Callable[[], object], min_time: float = 0.2, max_runs: int | None = None,
            warmup: int = 2) -> Timing:
    """Times ``fn()`` alone with ``torch.utils.benchmark`` after ``warmup`` untimed calls.

    Args:
        fn: the callable; its result is discarded.
        min_time: seconds of timed calls to collect at least (``blocked_autorange``'s ``min_run_time``).
        max_runs: at most this many timed calls, each timed on its own, at least ``min(5, max_runs)`` (``None``:
            ``blocked_autorange`` decides, timing blocks of calls for ``min_time`` seconds).
        warmup: untimed calls first (allocator, oneDNN primitive caches, compiled graphs).
    """
    from torch.utils import benchmark

    for _ in range(warmup):
        fn()
    if max_runs is not None:
        # Timed call by call here: torch.utils.benchmark's timeit() adds two warm-up calls to every measurement,
        # which would triple the cost of a slow callable (a training step) whose caller capped the calls.
        times: list[float] = []
        start = time.perf_counter()
        while len(times) < max_runs and (len(times) < min(5, max_runs) or time.perf_counter() - start < min_time):
            times += time_call(fn, 0, 1)
        return Timing(times, times)
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    m = timer.blocked_autorange(min_run_time=min_time)
    return Timing(list(m.times), list(m.times))


def alternate(fns: dict[str, Callable[[], object]], rounds: int, block: int | dict[str, int] = 1, warmup: int = 1,
              settle: int = 0, settle_time: float = 0.0) -> dict[str, Timing]:
    """Times every callable in ``fns`` in alternating blocks, as if each ran alone.

    Args:
        fns: name -> callable.
        rounds: blocks per callable; each round runs one block of every callable, the order rotated by one each
            round so that no callable always follows the same neighbour.
        block: timed calls per block, or name -> calls (a fast callable needs more calls than a slow one to fill
            a block of similar length).
        warmup: untimed calls of each callable before the first round.
        settle: untimed calls at the start of every block (absorb the previous callable's still-spinning threads).
        settle_time: keep making untimed calls until this many seconds have passed (after ``settle`` calls), so a
            fast callable settles as long as a slow one.

    Returns:
        name -> :class:`Timing` of every timed call.
    """
    names = list(fns)
    for name in names:
        for _ in range(warmup):
            fns[name]()
    timings: dict[str, Timing] = {name: Timing([], []) for name in names}
    for r in range(max(1, rounds)):
        for name in names[r % len(names):] + names[:r % len(names)]:
            _settle(fns[name], settle, settle_time)
            times = time_call(fns[name], 0, block[name] if isinstance(block, dict) else block)
            timings[name].times.extend(times)
            timings[name].blocks.append(sum(times) / len(times))
    return timings


def _settle(fn: Callable[[], object], calls: int, seconds: float) -> None:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    while time.perf_counter() - start < seconds:
        fn()


def library_versions() -> dict[str, str]:
    """Versions of torch and of every installed inference runtime."""
    import importlib.metadata

    versions = {"torch": torch.__version__}
    for name in ("onnxruntime", "ai-edge-litert", "openvino", "nncf"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


# /proc/cpuinfo flags -> the tag that names what they add to matrix arithmetic, widest vectors first.
_ISA_TAGS = (("avx512f", "avx512"), ("avx2", "avx2"), ("avx512_vnni", "vnni"), ("avx_vnni", "vnni"),
             ("avx512_bf16", "bf16"), ("amx_tile", "amx"))


def machine_name() -> str:
    """The CPU model, the core count and the matrix instructions the CPU has (from /proc/cpuinfo where available),
    e.g. ``AMD EPYC (family 26 model 2) 2cpu avx512+vnni+bf16``: one model name covers CPUs of several generations,
    with and without VNNI or AVX512-BF16, whose fastest backends differ."""
    try:
        with open("/proc/cpuinfo") as f:
            return describe_cpu(f.read(), os.cpu_count())
    except OSError:
        return describe_cpu("", os.cpu_count())


def describe_cpu(cpuinfo: str, cpus: int | None) -> str:
    """:func:`machine_name` from the text of /proc/cpuinfo (the first processor's model name and flags)."""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())  # the first processor's
    name = fields.get("model name") or platform.processor() or platform.machine()
    # A virtual machine's model name can hide the generation ("AMD EPYC" is Zen 3, 4 or 5), whose kernels differ;
    # the x86 family and model numbers do not.
    if fields.get("cpu family") and fields.get("model"):
        name += f" (family {fields['cpu family']} model {fields['model']})"
    flags = set(fields.get("flags", "").split())
    tags = []
    for flag, tag in _ISA_TAGS:
        if flag in flags and tag not in tags and not (tag == "avx2" and "avx512" in tags):
            tags.append(tag)
    return " ".join([name, f"{cpus}cpu", "+".join(tags)]).strip()
