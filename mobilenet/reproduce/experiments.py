"""The paper's accuracy experiments (V1 Tables 4-7 and the α x ρ grid of Figures 4-5) at small scale.

Every model is trained from scratch with the project's own training loop (:func:`mobilenet.train.train`) on the
embedded "shapes" data (or a user's dataset) at a proportionally reduced resolution: ρ = 1 is ``base_resolution``
pixels instead of 224, and the paper's ρ = 6/7, 5/7, 4/7 (192, 160, 128 at full scale) become
``round(base · ρ)`` (55, 46 and 37 for the default base of 64). Every row gets the same data, schedule and number of
steps; nothing is tuned per model.

Two measurements set the plan. On "shapes" every model first sits at chance for tens of thousands of training
images (MobileNet α = 0.5 at 64 px, batch 64: about 30 thousand at learning rate 0.6, 50 thousand at 0.1; AdamW,
smaller batches and a plain five-layer CNN did no better), so a run needs about 100 thousand images to say anything.
And Conv MobileNet at α = 1 trains at about 50 images/s at 64 px on 2 cores: that one model would need the hour.
Table 4's pair is therefore trained at ``table4_alpha`` (0.5 by default), where the two networks keep the paper's
cost ratio (8.2x at 64 px against 8.6x at α = 1) and cost about as much as one α = 1 MobileNet.

Runs are ordered by how much the report needs them: Table 4's pair first, then Table 5's, Tables 6 and 7, then the
rest of the grid at the first seed, then the extra seeds (Table 5's pair first). The number of epochs is fitted to
the budget for Tables 4-7; the rest of the grid and the extra seeds run only on time left over. A run that would
not fit is skipped and reported as skipped, never silently dropped.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from fractions import Fraction
from pathlib import Path

from ..cost import count_cost
from .budget import fit_epochs
from .speed import inference_seconds_per_image

ALPHAS = (1.0, 0.75, 0.5, 0.25)  # Table 6's width multipliers
RHOS = (Fraction(1), Fraction(6, 7), Fraction(5, 7), Fraction(4, 7))  # Table 7: 224, 192, 160, 128 over 224
DEFAULT_EPOCHS = 2  # when neither epochs nor a time budget is given
_NAMES = {"mobilenet_v1": "MobileNet", "mobilenet_v1_conv": "Conv MobileNet", "mobilenet_v1_shallow":
          "Shallow MobileNet"}


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


@dataclass
class ExperimentConfig:
    """What to train and for how long. Defaults are the full run; :meth:`quick` the smoke-test size.

    Attributes:
        data: embedded dataset name or a dataset path (as ``mobilenet train --data``).
        base_resolution: the input side that stands for ρ = 1 (224 in the paper).
        limit: training (and validation/test) samples used per split; None uses all.
        epochs: passes over the training samples, the same for every model; None (the default) chooses the
            largest number for which Tables 4-7 at the first seed fit ``budget_s`` at this machine's measured
            speed (:mod:`.budget`).
        batch_size: images per step.
        table4_alpha: width of Table 4's pair (MobileNet and Conv MobileNet); the paper's is 1.
        channels_last: train in NHWC, the faster layout for these small inputs on the CPU (the same for every row;
            the inference times in the tables are measured in NCHW either way).
        lr: peak learning rate (cosine schedule after a warm-up of 30 % of the epochs, at most one). The default
            is what leaves the chance plateau soonest at this budget: for MobileNet α = 0.5 at 64 px, 12 epochs
            of batch 64 reached 12.8, 26.8, 39.6 and 77.3 % val top-1 at 0.03, 0.1, 0.3 and 0.6. One rate for
            every row, never tuned per model; Conv MobileNet α = 0.5 prefers 0.1 (16 epochs: 89.4 % test top-1 at
            0.1, 15.3 % at 0.6), which is why Table 4 at this scale says more about the schedule than the layers.
        optimizer: ``"sgd"`` (momentum 0.9) or ``"rmsprop"`` (the papers').
        seeds: seeds per configuration; seeds after the first run only while the budget allows.
        budget_s: seconds the training phase may take in all; None for no limit.
        timing_repeats: timed batches per inference-time measurement (the median is kept).
        workdir: where run directories go (deleted after each run unless ``keep_runs``); None for a temp dir.
        keep_runs: keep every run's checkpoints and logs.
        progress: show progress bars.
    """

    data: str = "shapes"
    base_resolution: int = 64
    limit: int | None = None
    epochs: int | None = None
    batch_size: int = 64
    table4_alpha: float = 0.5
    channels_last: bool = True
    lr: float = 0.6
    optimizer: str = "sgd"
    seeds: int = 2
    budget_s: float | None = 50 * 60
    timing_repeats: int = 5
    workdir: str | None = None
    keep_runs: bool = False
    progress: bool = True
    extra: dict = field(default_factory=dict)  # further TrainConfig fields, recorded in the report

    @classmethod
    def quick(cls, **overrides) -> ExperimentConfig:
        """The same runs, few samples and one epoch: a smoke test of the whole pipeline in a couple of minutes."""
        return cls(**{"limit": 96, "epochs": 1, "seeds": 1, "timing_repeats": 2, "budget_s": None, **overrides})

    def check(self) -> None:
        """Opens the dataset once, so a wrong ``data`` fails with one clear error before any work starts."""
        from ..data import load_data

        load_data(self.data, resolution=self.base_resolution, seed=0, augment="light", limit=self.limit)

    def resolutions(self) -> dict[Fraction, int]:
        """ρ -> input side: ``round(base_resolution · ρ)``."""
        return {rho: max(1, round(self.base_resolution * rho)) for rho in RHOS}


def plan(resolutions: dict[Fraction, int], table4_alpha: float = 1.0) -> list[RunSpec]:
    """Every configuration once, in priority order: Tables 4, 5, 6, 7, then the rest of the α x ρ grid."""
    out: list[RunSpec] = []
    for members in table_rows(resolutions, table4_alpha).values():
        out += [s for s in members if s not in out]
    return out


def core(resolutions: dict[Fraction, int], table4_alpha: float = 1.0) -> list[RunSpec]:
    """The configurations of Tables 4-7, the ones the epochs are fitted for."""
    rows = table_rows(resolutions, table4_alpha)
    return [s for s in plan(resolutions, table4_alpha) if any(s in rows[t] for t in ("table4", "table5", "table6",
                                                                                      "table7"))]


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


def _train_config(cfg: ExperimentConfig, spec: RunSpec, seed: int, output: Path):
    from ..train import TrainConfig

    # fp32 for every model (no bf16 autocast at any size), so every row has the same numerics; the memory layout
    # changes only the speed.
    return TrainConfig(
        model=spec.model, alpha=spec.alpha, resolution=spec.resolution, data=cfg.data, limit=cfg.limit,
        epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, optimizer=cfg.optimizer,
        warmup_epochs=min(1.0, 0.3 * cfg.epochs), amp=False, channels_last=cfg.channels_last, seed=seed,
        output=str(output),
        progress=cfg.progress,
        **cfg.extra,
    )


def _run_one(cfg: ExperimentConfig, spec: RunSpec, seed: int, bundle, workdir: Path) -> dict:
    from ..train import load_checkpoint, train

    output = workdir / f"{spec.key}-seed{seed}"
    result = train(_train_config(cfg, spec, seed, output), bundle=bundle)
    if result.get("interrupted"):  # Ctrl-C or SIGTERM: the training loop stopped cleanly; so does the whole run
        raise KeyboardInterrupt
    model, _ = load_checkpoint(result["last"])  # the last epoch: no model is picked by its validation score
    cost = count_cost(model, spec.resolution)
    test = result.get("test")
    row = {
        "key": spec.key, "label": spec.label, "model": spec.model, "alpha": spec.alpha, "rho": str(spec.rho),
        "resolution": spec.resolution, "seed": seed, "status": "done",
        "top1": test["top1"] if test else result["top1"], "top5": test["top5"] if test else result["top5"],
        "split": "test" if test else "val", "val_top1": result["top1"],
        "mult_adds": cost.mult_adds, "params": cost.params,
        "ms_per_image": 1000 * inference_seconds_per_image(model, spec.resolution, repeats=cfg.timing_repeats),
        "train_seconds": result["seconds"], "steps": result["steps"],
        "images_per_s": result["history"][-1]["images_per_s"] if result["history"] else None,
    }
    if not cfg.keep_runs:
        shutil.rmtree(output, ignore_errors=True)
    return row


def run_experiments(cfg: ExperimentConfig) -> dict:
    """Trains every planned configuration (seed 0 first, then extra seeds while the budget allows).

    Returns:
        ``{"config": ..., "resolutions": {ρ: side}, "runs": [per-run dicts], "rows": [per-configuration
        summaries], "tables": {table: [keys]}, "class_names": [...], "data": ...}``.
    """
    from tqdm.auto import tqdm

    from ..data import load_data

    resolutions = cfg.resolutions()
    specs = plan(resolutions, cfg.table4_alpha)
    must = core(resolutions, cfg.table4_alpha)
    pair = table_rows(resolutions, cfg.table4_alpha)["table5"]  # the first extra seeds go to Table 5's close pair
    started = time.time()
    bundles = {r: load_data(cfg.data, resolution=r, seed=0, augment="light", limit=cfg.limit)
               for r in resolutions.values()}
    sizing = None
    if cfg.epochs is None:
        if cfg.budget_s is None:
            sizing = {"epochs": DEFAULT_EPOCHS, "reason": "no time budget"}
        else:
            sizing = fit_epochs(must, bundles, cfg.batch_size, cfg.timing_repeats, started + cfg.budget_s,
                                cfg.progress, optional=[s for s in specs if s not in must],
                                channels_last=cfg.channels_last)
        cfg = replace(cfg, epochs=sizing["epochs"])
    workdir = Path(cfg.workdir) if cfg.workdir else Path(tempfile.mkdtemp(prefix="mobilenet-reproduce-"))
    workdir.mkdir(parents=True, exist_ok=True)
    runs, seconds = [], {}  # seconds: configuration key -> wall-clock time of its first run
    by_key = {s.key: s for s in specs}

    def raw(spec: RunSpec) -> float | None:
        cost = (sizing or {}).get("cost", {}).get(spec.key)
        return None if cost is None else cost[0] * cfg.epochs + cost[1]

    def estimate(spec: RunSpec) -> float:
        # The measured estimate, scaled by how far off it was for the runs done so far; else the mean run so far.
        if raw(spec) is None:
            return seconds.get(spec.key, statistics.mean(seconds.values()) if seconds else 0.0)
        done = [by_key[k] for k in seconds if raw(by_key[k]) is not None]
        return raw(spec) * (sum(seconds[d.key] for d in done) / sum(raw(d) for d in done) if done else 1.0)

    order = [(spec, 0) for spec in specs] + [(spec, seed) for seed in range(1, cfg.seeds)
                                             for spec in pair + [s for s in specs if s not in pair]]
    bar = tqdm(order, desc="reproduce: training", unit="run", disable=not cfg.progress)
    try:
        for spec, seed in bar:
            bar.set_postfix_str(f"{spec.label} seed {seed}")
            elapsed = time.time() - started
            # Tables 4-7 at the first seed run while any budget is left; anything else only if it should fit.
            needed = 0.0 if (seed == 0 and spec in must) else estimate(spec)
            if cfg.budget_s is not None and elapsed + needed > cfg.budget_s:
                runs.append({**_spec_dict(spec), "seed": seed, "status": "skipped (time budget)"})
                continue
            row = _run_one(cfg, spec, seed, bundles[spec.resolution], workdir)
            seconds.setdefault(spec.key, time.time() - started - elapsed)
            runs.append(row)
    finally:
        bar.close()
        if not cfg.workdir and not cfg.keep_runs:
            shutil.rmtree(workdir, ignore_errors=True)
    any_bundle = next(iter(bundles.values()), None)
    return {
        "config": {**asdict(cfg), "workdir": None},
        "sizing": sizing,
        "resolutions": {str(rho): r for rho, r in resolutions.items()},
        "runs": runs,
        "rows": summarize(runs),
        "tables": {name: [s.key for s in members]
                   for name, members in table_rows(resolutions, cfg.table4_alpha).items()},
        "class_names": list(any_bundle.class_names) if any_bundle else [],
        "train_samples": len(any_bundle.train) if any_bundle else 0,
        "eval_samples": len(any_bundle.val if any_bundle.test is None else any_bundle.test) if any_bundle else 0,
        "seconds": time.time() - started,
    }


def _spec_dict(spec: RunSpec) -> dict:
    return {"key": spec.key, "label": spec.label, "model": spec.model, "alpha": spec.alpha, "rho": str(spec.rho),
            "resolution": spec.resolution}


def summarize(runs: list[dict]) -> list[dict]:
    """One row per configuration: mean accuracy over its finished seeds, the spread (max - min), cost and time."""
    rows: dict[str, dict] = {}
    for run in runs:
        row = rows.setdefault(run["key"], {k: run[k] for k in ("key", "label", "model", "alpha", "rho",
                                                                 "resolution")} | {"done": [], "skipped": 0})
        if run["status"] == "done":
            row["done"].append(run)
        else:
            row["skipped"] += 1
    out = []
    for row in rows.values():
        done = row.pop("done")
        if done:
            accs = [r["top1"] for r in done]
            row.update(top1=statistics.mean(accs), top1_min=min(accs), top1_max=max(accs),
                       spread=max(accs) - min(accs), seeds=[r["seed"] for r in done], top1_by_seed=accs,
                       mult_adds=done[0]["mult_adds"], params=done[0]["params"],
                       ms_per_image=statistics.median(r["ms_per_image"] for r in done),
                       train_seconds=sum(r["train_seconds"] for r in done), split=done[0]["split"])
        else:
            row.update(top1=None, seeds=[])
        out.append(row)
    return out
