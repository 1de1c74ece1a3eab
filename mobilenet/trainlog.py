"""What a training run leaves next to its checkpoints: the resolved config, per-step and per-epoch logs, a plot.

Files in the run directory:

* ``config.json``: every training option as resolved, plus the dataset's class names and normalisation;
* ``steps.jsonl``: one line per optimizer step (``step``, ``epoch``, ``loss``, ``lr``);
* ``log.jsonl`` and ``log.csv``: one row per epoch (losses, accuracies, images/s, seconds);
* ``curves.png``: loss and accuracy per epoch, train beside validation.

On resume, lines written after the checkpoint being resumed are dropped, so the logs read like one run.
"""

from __future__ import annotations

import csv
import json
import sys
import time
from pathlib import Path

from .errors import MobileNetError

RUN_FILES = ("config.json", "last.pt", "best.pt", "log.jsonl")


def default_output(model: str, root: str | Path = "runs") -> Path:
    """``runs/<model>-<YYYYmmdd-HHMMSS>``, with a numeric suffix if that exists already."""
    base = Path(root) / f"{model}-{time.strftime('%Y%m%d-%H%M%S')}"
    out, i = base, 1
    while out.exists():
        i += 1
        out = base.with_name(f"{base.name}-{i}")
    return out


def check_fresh(output: Path) -> None:
    """Refuses to start a new run in a directory that holds another run's files."""
    found = [name for name in RUN_FILES if (output / name).exists()]
    if found:
        raise MobileNetError(f"output {str(output)!r} already holds a run ({', '.join(found)}); pass --resume to "
                             f"continue it, or choose another --output")


def progress_bar(total: int, initial: int, desc: str, enabled: bool = True):
    """A tqdm bar of steps on a terminal. Off a terminal (a log file, CI) there is none: carriage-return frames
    would fill the file, and the one line per epoch of :func:`report` says what matters."""
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="step", leave=False,
                disable=not (enabled and sys.stderr.isatty()))


def report(line: str, enabled: bool = True) -> None:
    """Prints one line (an epoch's summary) without tearing a progress bar that is being drawn."""
    if enabled:
        from tqdm.auto import tqdm

        tqdm.write(line)


class RunLog:
    """Writes the run's files; a no-op on every rank but 0 (``enabled=False``)."""

    def __init__(self, output: Path, enabled: bool = True):
        self.output, self.enabled = Path(output), enabled
        self._steps = None

    def start(self, config: dict, step: int = 0, epochs_done: int = 0) -> None:
        """Writes ``config.json`` and trims the logs back to ``step`` / ``epochs_done`` (0 for a fresh run)."""
        if not self.enabled:
            return
        self.output.mkdir(parents=True, exist_ok=True)
        (self.output / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        _keep_lines(self.output / "steps.jsonl", lambda r: r.get("step", 0) <= step)
        _keep_lines(self.output / "log.jsonl", lambda r: r.get("epoch", 0) <= epochs_done)
        self._steps = open(self.output / "steps.jsonl", "a")

    def step(self, record: dict) -> None:
        if self._steps is not None:
            self._steps.write(json.dumps(record) + "\n")

    def flush(self) -> None:
        if self._steps is not None:
            self._steps.flush()

    def epoch(self, record: dict, history: list[dict]) -> None:
        """Appends one epoch to ``log.jsonl`` and rewrites ``log.csv`` from the whole history."""
        if not self.enabled:
            return
        self.flush()
        with open(self.output / "log.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        keys = list(dict.fromkeys(k for row in history for k in row))
        with open(self.output / "log.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(history)

    def close(self) -> None:
        if self._steps is not None:
            self._steps.close()
            self._steps = None


def _keep_lines(path: Path, keep) -> None:
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if keep(json.loads(line)):
                kept.append(line)
        except json.JSONDecodeError:  # a line cut short by a crash
            continue
    path.write_text("".join(line + "\n" for line in kept))


def plot_curves(history: list[dict], path: str | Path, title: str = "") -> Path | None:
    """Saves loss and top-1 accuracy per epoch (train and validation) as a PNG; None when there is no epoch."""
    if not history:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # no pyplot: no global state, no display
    from matplotlib.figure import Figure

    epochs = [row["epoch"] for row in history]
    fig = Figure(figsize=(10, 4), dpi=100)
    FigureCanvasAgg(fig)
    for ax, key, label in ((fig.add_subplot(1, 2, 1), "loss", "loss"), (fig.add_subplot(1, 2, 2), "top1",
                                                                        "top-1 accuracy (%)")):
        for split, style in (("train", "o-"), ("val", "s-")):
            values = [row.get(f"{split}_{key}") for row in history]
            if any(v is not None for v in values):
                ax.plot(epochs, [float("nan") if v is None else v for v in values], style, label=split)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path
