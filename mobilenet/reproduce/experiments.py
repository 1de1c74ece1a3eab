"""The paper's accuracy experiments (V1 Tables 4-7 and the α x ρ grid of Figures 4-5) at small scale.

Every model is trained from scratch with the project's own training loop (:func:`mobilenet.train.train`) on the
embedded "patterns" data (or a user's dataset) at a proportionally reduced resolution: ρ = 1 is ``base_resolution``
pixels instead of 224, and the paper's ρ = 6/7, 5/7, 4/7 (192, 160, 128 at full scale) become
``round(base · ρ)``. Every model is trained the same way (the paper's practice): the same data, schedule, learning
rate and number of steps, and for seed ``s`` the same data order and augmentation, so results pair up seed by seed.

The plan, in order: every Table 4-7 configuration at seed 0; a learning-rate sweep (half and twice the rate,
seed 0) on the models most likely to prefer another rate (Table 4's pair, Shallow MobileNet, α = 0.25); the other
seeds of every Table 4-7 configuration; the rest of the 16-point α x ρ grid at seed 0. The sweep comes early so
that a rate outside the stable region shows within the first third of the run, not at its end. Each finished run
is written to ``<out>/runs/<run>.json`` at once, with its per-image test results, and a run still training keeps
its checkpoints in ``<out>/runs/<run>/``: the same command run again skips what is finished and continues a killed
run from its last epoch.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from fractions import Fraction
from pathlib import Path

import torch

from ..cost import count_cost
from ..distributed import World, broadcast
from ..errors import MobileNetError
from .speed import inference_seconds_per_image
from .stats import mean_std, pack_correct

ALPHAS = (1.0, 0.75, 0.5, 0.25)  # Table 6's width multipliers
RHOS = (Fraction(1), Fraction(6, 7), Fraction(5, 7), Fraction(4, 7))  # Table 7: 224, 192, 160, 128 over 224
_NAMES = {"mobilenet_v1": "MobileNet", "mobilenet_v1_conv": "Conv MobileNet", "mobilenet_v1_shallow":
          "Shallow MobileNet"}
# Fields a finished run must share with the current plan to be reused on a resume.
_PLAN_FIELDS = ("data", "base_resolution", "limit", "epochs", "batch_size", "channels_last", "optimizer",
                "warmup_epochs", "extra")


@dataclass(frozen=True)
class RunSpec:
    """One model configuration to train: a registered V1 variant at (α, ρ)."""

    model: str
    alpha: float
    rho: Fraction
    resolution: int

    @property
    def key(self) -> str:
        return f"{self.model}-a{self.alpha:g}-r{self.resolution}"

    @property
    def label(self) -> str:
        return f"{self.alpha:g} {_NAMES[self.model]}-{self.resolution}"


@dataclass(frozen=True)
class Run:
    """One training run: a configuration, a seed and a learning rate."""

    spec: RunSpec
    seed: int
    lr: float
    purpose: str  # "tables", "sweep" or "grid"

    @property
    def name(self) -> str:
        return f"{self.spec.key}-lr{self.lr:g}-seed{self.seed}"


@dataclass
class ExperimentConfig:
    """What to train and for how long. Defaults are the full run; :meth:`quick` the smoke-test size.

    Attributes:
        data: embedded dataset name or a dataset path (as ``mobilenet train --data``).
        base_resolution: the input side that stands for ρ = 1 (224 in the paper).
        limit: training samples (and at most this many validation and test samples); None uses all.
        epochs: passes over the training samples, the same for every model.
        batch_size: images per step.
        table4_alpha: width of Table 4's pair (MobileNet and Conv MobileNet); the paper's is 1.
        channels_last: train in NHWC, the faster layout for these small inputs on the CPU (the same for every row;
            the inference times in the tables are measured in NCHW either way).
        lr: peak learning rate, the same for every model (warm-up, then cosine decay).
        warmup_epochs: linear warm-up length.
        optimizer: ``"sgd"`` (momentum 0.9), ``"rmsprop"`` (the papers'), ``"adamw"`` or ``"lars"``.
        seeds: seeds per Table 4-7 configuration (the grid and the sweep use seed 0).
        lr_factors: the sweep's rates as multiples of ``lr`` (besides ``lr`` itself); empty for no sweep.
        grid: train the 9 grid points that no table needs (Figures 4-5).
        timing_repeats: timed batches per inference-time measurement (the median is kept).
        device: ``"cpu"``, ``"cuda"`` or None (CUDA when available).
        keep_runs: keep every run's checkpoints and logs under ``<out>/runs``.
        progress: show progress bars.
        extra: further ``TrainConfig`` fields, recorded in the report.
    """

    data: str = "patterns"
    base_resolution: int = 48
    limit: int | None = None
    epochs: int = 7
    batch_size: int = 64
    table4_alpha: float = 0.5
    channels_last: bool = True
    lr: float = 0.05
    warmup_epochs: float = 0.3
    optimizer: str = "sgd"
    seeds: int = 3
    lr_factors: tuple[float, ...] = (0.5, 2.0)
    grid: bool = True
    timing_repeats: int = 5
    device: str | None = None
    keep_runs: bool = False
    progress: bool = True
    extra: dict = field(default_factory=dict)

    @classmethod
    def quick(cls, **overrides) -> ExperimentConfig:
        """The same plan with few samples and one epoch: a smoke test of the whole pipeline in a minute or two."""
        return cls(**{"limit": 128, "epochs": 1, "seeds": 2, "timing_repeats": 2, "base_resolution": 32,
                      **overrides})

    def check(self) -> None:
        """Opens the dataset once, so a wrong ``data`` fails with one clear error before any work starts."""
        from ..data import load_data

        load_data(self.data, resolution=self.base_resolution, seed=0, augment="light", limit=self.limit)

    def resolutions(self) -> dict[Fraction, int]:
        """ρ -> input side: ``round(base_resolution · ρ)``."""
        return {rho: max(1, round(self.base_resolution * rho)) for rho in RHOS}


def table_rows(resolutions: dict[Fraction, int], table4_alpha: float = 1.0) -> dict[str, list[RunSpec]]:
    """Which configurations make up each of the paper's accuracy tables."""
    base = resolutions[Fraction(1)]
    return {
        "table4": [RunSpec("mobilenet_v1_conv", table4_alpha, Fraction(1), base),
                   RunSpec("mobilenet_v1", table4_alpha, Fraction(1), base)],
        "table5": [RunSpec("mobilenet_v1", 0.75, Fraction(1), base),
                   RunSpec("mobilenet_v1_shallow", 1.0, Fraction(1), base)],
        "table6": [RunSpec("mobilenet_v1", a, Fraction(1), base) for a in ALPHAS],
        "table7": [RunSpec("mobilenet_v1", 1.0, rho, r) for rho, r in resolutions.items()],
        "grid": [RunSpec("mobilenet_v1", a, rho, r) for a in ALPHAS for rho, r in resolutions.items()],
    }


def _unique(specs) -> list:
    out = []
    for s in specs:
        if s not in out:
            out.append(s)
    return out


def plan(cfg: ExperimentConfig) -> list[Run]:
    """Every run of the reproduction, in the order they train."""
    rows = table_rows(cfg.resolutions(), cfg.table4_alpha)
    core = _unique(s for t in ("table4", "table5", "table6", "table7") for s in rows[t])
    swept = _unique([*rows["table4"], rows["table5"][1], rows["table6"][-1]])
    runs = [Run(s, 0, cfg.lr, "tables") for s in core]
    runs += [Run(s, 0, cfg.lr * f, "sweep") for f in cfg.lr_factors for s in swept]
    runs += [Run(s, seed, cfg.lr, "tables") for seed in range(1, cfg.seeds) for s in core]
    if cfg.grid:
        runs += [Run(s, 0, cfg.lr, "grid") for s in rows["grid"] if s not in core]
    return runs


def _fingerprint(cfg: ExperimentConfig) -> dict:
    return json.loads(json.dumps({k: getattr(cfg, k) for k in _PLAN_FIELDS}))


def _train_config(cfg: ExperimentConfig, run: Run, output: Path):
    from ..train import TrainConfig

    # fp32 for every model (no bf16 autocast at any size), so every row has the same numerics; the memory layout
    # changes only the speed.
    return TrainConfig(
        model=run.spec.model, alpha=run.spec.alpha, resolution=run.spec.resolution, data=cfg.data, limit=cfg.limit,
        epochs=cfg.epochs, batch_size=cfg.batch_size, lr=run.lr, optimizer=cfg.optimizer,
        warmup_epochs=min(cfg.warmup_epochs, cfg.epochs), amp=False, channels_last=cfg.channels_last,
        seed=run.seed, output=str(output), resume=str(output) if (output / "last.pt").exists() else None,
        device=cfg.device, progress=cfg.progress, **cfg.extra,
    )


def _test_results(model, dataset, batch_size: int, device) -> list[bool]:
    """Whether each test image (in order) is classified correctly."""
    from torch.utils.data import DataLoader

    correct = []
    with torch.no_grad():
        for x, y in DataLoader(dataset, batch_size=batch_size, shuffle=False):
            correct += (model(x.to(device)).argmax(1).cpu() == y).tolist()
    return correct


def run_one(cfg: ExperimentConfig, run: Run, bundle, workdir: Path, main: bool = True) -> dict | None:
    """Trains one run (continuing it if its directory holds a checkpoint) and returns its record.

    Under torchrun every process trains its share of each batch; only the main one (``main``) then evaluates the
    test split, times inference and returns the record (the others return None)."""
    from ..train import load_checkpoint, train

    output = workdir / run.name
    # The test split is evaluated here, once, image by image; training sees only the train and val splits.
    result = train(_train_config(cfg, run, output), bundle=replace(bundle, test=None))
    if result.get("interrupted"):  # Ctrl-C or SIGTERM: the training loop stopped cleanly; so does the whole run
        raise KeyboardInterrupt
    if not main:
        return None
    model, _ = load_checkpoint(result["last"])  # the last epoch: no model is picked by its validation score
    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    correct = _test_results(model.to(device), bundle.test, 2 * cfg.batch_size, device)
    cost = count_cost(model.cpu(), run.spec.resolution)
    history = result["history"]
    record = {
        "run": run.name, "key": run.spec.key, "label": run.spec.label, "model": run.spec.model,
        "alpha": run.spec.alpha, "rho": str(run.spec.rho), "resolution": run.spec.resolution, "seed": run.seed,
        "lr": run.lr, "purpose": run.purpose, "status": "done", "plan": _fingerprint(cfg),
        "top1": 100 * sum(correct) / len(correct), "split": "test", "test_images": len(correct),
        "correct": pack_correct(correct), "val_top1": result["top1"],
        "val_top1_by_epoch": [h["val_top1"] for h in history],
        "mult_adds": cost.mult_adds, "params": cost.params,
        "ms_per_image": 1000 * inference_seconds_per_image(model, run.spec.resolution, repeats=cfg.timing_repeats),
        "train_seconds": result["seconds"], "steps": result["steps"],
        "images_per_s": history[-1]["images_per_s"] if history else None,
    }
    if not cfg.keep_runs:
        shutil.rmtree(output, ignore_errors=True)
    return record


def finished_runs(workdir: Path, cfg: ExperimentConfig) -> dict[str, dict]:
    """The records of runs already finished under ``workdir`` for this plan.

    Raises:
        MobileNetError: a finished run was trained with other settings (another plan in the same directory).
    """
    out, want = {}, _fingerprint(cfg)
    for path in sorted(workdir.glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # a record cut short by a crash is trained again
        if record.get("plan") != want:
            raise MobileNetError(f"{path} was trained with other settings ({record.get('plan')}); use another --out "
                                 "or remove its runs/ folder")
        out[record["run"]] = record
    return out


def _estimates(runs: list[Run], bundles: dict, cfg: ExperimentConfig) -> dict[str, float]:
    """Seconds each run should take at this machine's measured training speed, for the progress bar's ETA."""
    from .budget import loading_seconds, run_cost, seconds_per_sample

    any_bundle = next(iter(bundles.values()))
    speed, out = {}, {}
    loading = {side: loading_seconds(bundle.train) for side, bundle in bundles.items()}
    drawn: set[int] = set()  # sides whose images an earlier run has drawn (they stay cached for the later runs)
    for run in runs:
        spec, bundle = run.spec, bundles[run.spec.resolution]
        if spec.key not in speed:
            speed[spec.key] = seconds_per_sample(spec.model, spec.alpha, spec.resolution,
                                                 len(any_bundle.class_names), any_bundle.in_chans,
                                                 cfg.batch_size, cfg.channels_last)
        draw_s, load_s = loading[spec.resolution]
        per_epoch, fixed = run_cost(spec, bundle, speed[spec.key], load_s, cfg.timing_repeats)
        images = sum(len(split) for split in (bundle.train, bundle.val, bundle.test) if split is not None)
        first = spec.resolution not in drawn
        out[run.name] = per_epoch * cfg.epochs + fixed + (draw_s * images if first else 0.0)
        drawn.add(spec.resolution)
    return out


def run_experiments(cfg: ExperimentConfig, out: Path, world: World | None = None) -> dict | None:
    """Trains every planned run not already finished under ``out/runs`` and summarises them all.

    Under torchrun (``world`` of several processes) every process trains every run data-parallel, in the order
    the main process chose; only the main process writes records and returns the summary (the others None).

    Returns:
        ``{"config", "resolutions", "runs": [run records], "rows": [per-configuration summaries of the table
        runs], "sweep": [...], "tables": {table: [keys]}, "class_names", "train_samples", "eval_samples",
        "seconds"}``.
    """
    from tqdm.auto import tqdm

    from ..data import load_data

    resolutions = cfg.resolutions()
    runs = plan(cfg)
    workdir = Path(out) / "runs"
    workdir.mkdir(parents=True, exist_ok=True)
    world = world or World()
    done = finished_runs(workdir, cfg)
    started = time.time()
    names = broadcast([r.name for r in runs if r.name not in done], world)
    todo = [r for r in runs if r.name in names]
    needed = sorted({r.spec.resolution for r in todo}) or [cfg.base_resolution]
    bundles = {r: load_data(cfg.data, resolution=r, seed=0, augment="light", limit=cfg.limit) for r in needed}
    estimate = _estimates(todo, bundles, cfg) if todo and world.main else {r.name: 0.0 for r in todo}
    total = sum(estimate.values())
    # On a terminal a bar in estimated seconds (so its ETA weighs each run by its cost); off one, a line per run.
    bar = tqdm(total=round(total), unit="s", disable=not (cfg.progress and world.main and sys.stderr.isatty()),
               desc=f"reproduce: {len(todo)} of {len(runs)} runs to train, about {total / 60:.0f} min",
               bar_format="{l_bar}{bar}| {elapsed}<{remaining} (estimated)")
    try:
        for i, run in enumerate(todo):
            bar.set_postfix_str(f"{run.spec.label} lr {run.lr:g} seed {run.seed}")
            record = run_one(cfg, run, bundles[run.spec.resolution], workdir, world.main)
            if record is None:
                continue
            tmp = workdir / f"{run.name}.json.tmp"
            tmp.write_text(json.dumps(record) + "\n")
            tmp.replace(workdir / f"{run.name}.json")  # atomic: a record is either whole or absent
            done[run.name] = record
            bar.update(round(estimate[run.name]))
            if bar.disable and cfg.progress:
                print(f"reproduce: run {i + 1}/{len(todo)} {run.name}: test top-1 {record['top1']:.2f} % "
                      f"({(time.time() - started) / 60:.1f} min so far)", flush=True)
    finally:
        bar.close()
    if not world.main:
        return None
    records = [done[r.name] for r in runs]
    any_bundle = next(iter(bundles.values()))
    main = [r for r in records if r["lr"] == cfg.lr]
    return {
        "config": asdict(cfg),
        "resolutions": {str(rho): r for rho, r in resolutions.items()},
        "runs": records,
        "rows": summarize(main),
        "sweep": sweep_rows(records, cfg.lr),
        "tables": {name: [s.key for s in members]
                   for name, members in table_rows(resolutions, cfg.table4_alpha).items()},
        "class_names": list(any_bundle.class_names),
        "train_samples": len(any_bundle.train),
        "val_samples": len(any_bundle.val),
        "eval_samples": len(any_bundle.test),
        "seconds": time.time() - started,
        "train_seconds": sum(r["train_seconds"] for r in records),
    }


def summarize(runs: list[dict]) -> list[dict]:
    """One row per configuration: mean and std of test top-1 over its seeds, first-epoch val top-1, cost, time."""
    rows: dict[str, dict] = {}
    for run in runs:
        rows.setdefault(run["key"], []).append(run)
    out = []
    for group in rows.values():
        group.sort(key=lambda r: r["seed"])
        accs = [r["top1"] for r in group]
        mean, std = mean_std(accs)
        first = [r["val_top1_by_epoch"][0] for r in group if r.get("val_top1_by_epoch")]
        out.append({
            **{k: group[0][k] for k in ("key", "label", "model", "alpha", "rho", "resolution", "mult_adds",
                                        "params", "split")},
            "top1": mean, "std": std, "top1_by_seed": accs, "seeds": [r["seed"] for r in group],
            "spread": max(accs) - min(accs), "val_top1": mean_std([r["val_top1"] for r in group])[0],
            "val_top1_epoch1": min(first) if first else None,
            "ms_per_image": sorted(r["ms_per_image"] for r in group)[len(group) // 2],
            "train_seconds": sum(r["train_seconds"] for r in group),
        })
    return out


def sweep_rows(records: list[dict], lr: float) -> list[dict]:
    """Per swept configuration: val top-1 (the calibration split) at each rate, seed 0, and the chosen rate's
    distance from the best."""
    swept = {r["key"] for r in records if r["purpose"] == "sweep"}
    out = []
    for key in sorted(swept, key=lambda k: [r["key"] for r in records].index(k)):
        by_lr = {r["lr"]: r for r in records if r["key"] == key and r["seed"] == 0}
        val = {rate: by_lr[rate]["val_top1"] for rate in sorted(by_lr)}
        best = max(val.values())
        out.append({"key": key, "label": by_lr[lr]["label"] if lr in by_lr else key, "val_top1": val,
                    "test_top1": {rate: by_lr[rate]["top1"] for rate in sorted(by_lr)},
                    "best_lr": max(val, key=val.get), "chosen_behind_best": best - val.get(lr, float("nan"))})
    return out
