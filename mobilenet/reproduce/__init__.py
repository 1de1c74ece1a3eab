"""``mobilenet reproduce``: the MobileNet papers' tables, claims and trade-off plots regenerated from this code.

:func:`reproduce` runs the four parts in order and writes one self-contained report:

1. :mod:`.tables`: V1 Tables 1-7, the 16-configuration α x resolution grid and V2 Table 2, counted exactly and set
   beside the printed numbers;
2. :mod:`.speed`: wall-clock time of one full 3x3 conv vs one depthwise separable layer;
3. :mod:`.experiments`: Tables 4-7 (several seeds), a learning-rate sweep and the grid trained at small scale with
   :func:`mobilenet.train.train`, each finished run saved at once so that a killed reproduction resumes;
4. :mod:`.claims`, :mod:`.stats` and :mod:`.report`: each claim judged from a paired 95 % interval, the Markdown
   report, figures, CSV, JSON.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import time
from pathlib import Path

import torch

from .. import distributed
from .claims import all_claims
from .experiments import ExperimentConfig, run_experiments
from .report import write_report
from .speed import core_idea_speed
from .tables import all_tables

__all__ = ["ExperimentConfig", "rerender", "reproduce"]


def _machine() -> str:
    return (f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), torch {torch.__version__} "
            f"with {torch.get_num_threads()} thread(s), Python {platform.python_version()}")


def _load() -> str:
    try:
        return "/".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "?"


def choose_threads(threads: int | None) -> tuple[int, str]:
    """The intra-op thread count to use, and why.

    On a CPU shared with other busy processes, several OpenMP threads per process spin at every barrier while the
    cores are taken, which can make training many times slower than one thread. So unless a count is given, one
    thread is used when the load average already exceeds half the cores, and torch's default otherwise.
    """
    if threads is not None:
        return threads, "set by --threads"
    cores = os.cpu_count() or 1
    try:
        busy = os.getloadavg()[0] > cores / 2
    except OSError:
        busy = False
    if busy:
        return 1, f"1-minute load average above {cores / 2:g} at the start: one thread avoids oversubscription"
    return torch.get_num_threads(), "torch's default"


def reproduce(out: str | os.PathLike, experiments: ExperimentConfig, *, quick: bool = False,
              speed_repeats: int = 20, threads: int | None = None, command: str = "mobilenet reproduce") -> Path | None:
    """Runs the whole reproduction and writes the report under ``out``.

    Args:
        out: report directory (created; existing report files are overwritten). Finished training runs are kept
            in ``out/runs``: running again with the same settings continues where a killed run stopped.
        experiments: what to train (:class:`ExperimentConfig`, or ``ExperimentConfig.quick()``).
        quick: marks the report as a smoke test.
        speed_repeats: timed calls per variant in the core-idea speed test.
        threads: intra-op threads for training and timing; None chooses by :func:`choose_threads`.
        command: the command line recorded in the report.

    Under ``torchrun`` (``torchrun --nproc_per_node=N -m mobilenet reproduce ...``) every process trains every run
    data-parallel, with the same global batch, so the plan and its numbers keep their meaning; the main process
    writes the records and the report.

    Returns:
        The path of ``report.md`` (None in torchrun processes other than the main one).
    """
    experiments.check()
    world = distributed.setup(experiments.device)
    try:
        return _reproduce(Path(out), experiments, world, quick, speed_repeats, threads, command)
    finally:
        distributed.teardown(world)


def _reproduce(out: Path, experiments: ExperimentConfig, world: distributed.World, quick: bool, speed_repeats: int,
               threads: int | None, command: str) -> Path | None:
    started = time.time()
    load_start = _load()
    n_threads, why_threads = choose_threads(threads)
    torch.set_num_threads(n_threads)
    phases = {}
    tick = time.time()
    tables = all_tables()
    phases["tables"] = time.time() - tick

    tick = time.time()
    speed = core_idea_speed(repeats=speed_repeats) if world.main else {}
    speed["load"] = _load()
    phases["speed"] = time.time() - tick

    tick = time.time()
    exp = run_experiments(experiments, out, world)
    phases["experiments"] = time.time() - tick
    if exp is None:  # a torchrun process other than the main one: it trained its share, the main one reports
        return None

    claims = all_claims(speed, exp, len(exp["class_names"]) or 1000, exp["resolutions"])
    meta = {
        "command": command, "quick": quick, "seconds": time.time() - started, "phases": phases,
        "finished": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{_machine()} ({why_threads}); load average (1/5/15 min) {load_start} at the start, "
                   f"{_load()} at the end" + (f"; {world.size} torchrun processes" if world.distributed else ""),
    }
    return write_report(out, meta, tables, speed, exp, claims)


def rerender(out: str | os.PathLike) -> Path:
    """Writes the report of a finished run in ``out`` again from its saved numbers, without measuring or training.

    The cost tables are counted again and the claims judged again by the rules in :mod:`.claims`, from the run's
    speed and accuracy numbers as saved (both take a second). For a report whose layout, wording or rules changed.
    """
    from ..errors import MobileNetError

    out = Path(out)

    def saved(name: str):
        try:
            return json.loads((out / name).read_text())
        except (OSError, ValueError) as e:
            raise MobileNetError(f"{out / name}: not the output of a finished `mobilenet reproduce` run "
                                 f"({e})") from None

    meta, speed, exp = saved("report.json")["meta"], saved("speed.json"), saved("experiments.json")
    claims = all_claims(speed, exp, len(exp["class_names"]) or 1000, exp["resolutions"])
    return write_report(out, meta, all_tables(), speed, exp, claims)
