"""The training loop, in one process or under torchrun DDP.

One path serves both: a single process is a world of size 1; under ``torchrun`` every process trains on its share
of each global batch, DDP averages the gradients, only rank 0 logs and saves, and every rank's random seed is
offset by its rank. A run is exactly reproducible on the CPU with a fixed seed, including across a resume from any
checkpoint: the data order is a function of (seed, epoch), every sample's augmentation a function of
(seed, epoch, index), and the generators that drive dropout are saved in the checkpoint.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from dataclasses import asdict, replace
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from . import distributed
from .checkpoint import read_for_resume, save_atomic, set_rng_state
from .cost import count_cost
from .errors import MobileNetError
from .evaluate import evaluate, load_checkpoint
from .heap import retain_freed_memory
from .models import create_model
from .models.base import BASE_RESOLUTION
from .optim import LRFactor, ModelEMA, descend, make_optimizer, training_loss
from .resumable import ResumableSampler, SeededSamples, StopSignal, seed_all, set_sampling_epoch
from .runlock import RunLock
from .runstate import RunState
from .trainconfig import AMP_MIN_RESOLUTION, RESUMABLE_CHANGES, TrainConfig
from .trainlog import RunLog, check_fresh, default_output, plot_curves, progress_bar, report

__all__ = ["TrainConfig", "evaluate", "load_checkpoint", "train"]


def train(cfg: TrainConfig, bundle=None) -> dict:
    """Trains ``cfg.model`` on ``cfg.data`` and evaluates it on the validation split after every epoch.

    Args:
        cfg: the options.
        bundle: an already loaded ``mobilenet.data.DataBundle`` (or any object with ``train``, ``val``,
            ``class_names``, ``mean``, ``std``, ``in_chans``) instead of loading ``cfg.data``.

    Returns:
        ``top1``/``top5`` (percent, validation split, last epoch), ``best_top1``, ``checkpoint`` (best),
        ``last``, ``output``, ``history`` (per-epoch dicts), ``mult_adds``, ``params``, ``seconds``, ``steps``,
        ``interrupted`` (Ctrl-C / SIGTERM), and ``test`` (top-1/top-5 on the test split when there is one).

    Raises:
        MobileNetError: bad options or data, a resume that does not match, or a non-finite loss (the message
            names the step; the last good checkpoint is kept).
    """
    cfg = replace(cfg)  # resolved in place below; the caller's object stays as given
    cfg.check()
    retain_freed_memory()  # a large batch's activations would otherwise be page-faulted in at every step
    world = distributed.setup(cfg.device)
    try:
        with ExitStack() as held:  # the output directory's lock, released however the run ends
            return _train(cfg, bundle, world, held)
    finally:
        distributed.teardown(world)


def resume_path(cfg: TrainConfig) -> Path:
    """The checkpoint ``cfg.resume`` names: a file, a run directory's ``last.pt``, or, for a bare ``--resume``
    ("", "auto", "last"), ``last.pt`` in ``cfg.output`` (even before that directory exists: a run killed while
    starting)."""
    path = Path(cfg.resume)
    if cfg.resume in ("", "auto", "last"):
        if cfg.output is None:
            raise MobileNetError("--resume without a checkpoint needs --output (the run directory)")
        return Path(cfg.output) / "last.pt"
    return path / "last.pt" if path.is_dir() else path


def read_resume(cfg: TrainConfig) -> tuple[dict | None, Path]:
    """``(checkpoint, its path)`` for ``cfg.resume``, falling back to the kept previous checkpoint when the last
    is damaged; ``(None, path)`` when a bare ``--resume`` finds a run stopped before its first checkpoint."""
    return read_for_resume(resume_path(cfg), missing_ok=cfg.resume in ("", "auto", "last"))


def _check_resume(cfg: TrainConfig, stored: dict) -> None:
    diffs = [f"{k}: checkpoint {stored[k]!r}, now {v!r}" for k, v in asdict(cfg).items()
             if k not in RESUMABLE_CHANGES and k in stored and stored[k] != v]
    if diffs:
        raise MobileNetError("cannot resume with different options (" + "; ".join(diffs) + "); only "
                             + ", ".join(sorted(RESUMABLE_CHANGES - {"resume", "output"})) + " may change")


def _load_data(cfg: TrainConfig, resolution: int):
    from .data import load_data  # the data package is only needed when no bundle is passed

    return load_data(cfg.data, data_format=cfg.data_format, resolution=resolution, in_chans=cfg.in_chans,
                     seed=cfg.seed, val_fraction=cfg.val_fraction, augment=cfg.augment, limit=cfg.limit)


def _train(cfg: TrainConfig, bundle, world: distributed.World, held: ExitStack) -> dict:
    run = _Run(cfg, world)
    run.open(held)
    run.build(bundle)
    run.resume()
    with StopSignal() as stop:
        try:
            while run.state.epoch < cfg.epochs and not run.halted:
                run.run_epoch(stop)
                if not run.halted:
                    run.end_epoch()
        finally:
            run.log.close()
    return run.finish()


class _Run:
    """One training run, phase by phase: open (output directory, lock, checkpoint to resume), build (data,
    model, optimizer, loader, log), resume, then per epoch run_epoch and end_epoch, and finish."""

    def __init__(self, cfg: TrainConfig, world: distributed.World):
        self.cfg, self.world, self.started = cfg, world, time.time()
        self.ckpt, self.saved_step = None, None
        self.interrupted = self.stopped = False

    @property
    def halted(self) -> bool:
        return self.interrupted or self.stopped

    def open(self, held: ExitStack) -> None:
        """Resolves the checkpoint to resume and the run directory, and locks the directory."""
        cfg, world, locked, output = self.cfg, self.world, None, None
        if cfg.resume:
            path = resume_path(cfg)
            if world.main and path.parent.is_dir() and path.name == "last.pt":
                locked = path.parent  # locked before reading, so no other run is writing it
                held.enter_context(RunLock(locked))
            # A bare --resume of a run stopped before its first checkpoint starts that run again from step 0.
            self.ckpt, path = read_resume(cfg)
            if self.ckpt is not None:
                _check_resume(cfg, self.ckpt["config"])
            if cfg.output is None:
                cfg.output = str(path.parent)
        if world.main:
            output = Path(cfg.output) if cfg.output else default_output(cfg.model)
            if locked is None or output.resolve() != locked.resolve():
                held.enter_context(RunLock(output))
            if not cfg.resume:
                check_fresh(output)
        self.output = distributed.broadcast(output if world.main else None, world)
        cfg.output = str(self.output)

    def build(self, bundle) -> None:
        """The data, model, optimizer, EMA, the run's state, the sampler and loader, and the log."""
        cfg, world = self.cfg, self.world
        resolution = cfg.resolution or BASE_RESOLUTION
        if cfg.amp is None:
            cfg.amp = resolution >= AMP_MIN_RESOLUTION
        if cfg.batch_size % world.size:
            raise MobileNetError(f"batch_size {cfg.batch_size} must be divisible by the {world.size} processes")
        if cfg.sync_bn and world.device.type != "cuda":
            raise MobileNetError("--sync-bn needs CUDA (PyTorch's SyncBatchNorm has no CPU implementation)")
        self.bundle = bundle = bundle if bundle is not None else _load_data(cfg, resolution)
        self.steps_per_epoch = len(bundle.train) // cfg.batch_size
        if self.steps_per_epoch < 1:
            raise MobileNetError(f"the training split has {len(bundle.train)} samples, fewer than one batch of "
                                 f"{cfg.batch_size}; lower --batch-size")
        seed_all(cfg.seed)  # the same initial weights on every rank
        model_kwargs = {"alpha": cfg.alpha, "resolution": resolution, "num_classes": len(bundle.class_names),
                        "in_chans": bundle.in_chans}
        if cfg.dropout is not None:
            model_kwargs["dropout"] = cfg.dropout
        model = create_model(cfg.model, **model_kwargs)
        self.cost = count_cost(model)
        self.fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
        model.to(world.device, memory_format=self.fmt)
        data = {"class_names": list(bundle.class_names), "mean": list(bundle.mean), "std": list(bundle.std),
                "in_chans": bundle.in_chans}
        self.state = RunState(
            asdict(cfg), model_kwargs, model,
            make_optimizer(model, cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay, cfg.decay_all),
            ModelEMA(model, cfg.ema) if cfg.ema else None, data)
        self.net = self._wrap(model)
        self.samples = SeededSamples(bundle.train, cfg.seed)
        self.sampler = ResumableSampler(self.samples, num_replicas=world.size, rank=world.rank, shuffle=True,
                                        seed=cfg.seed, drop_last=True)
        # A private generator keeps the loader's per-epoch seed draw from shifting the global (dropout) stream.
        self.loader = DataLoader(self.samples, batch_size=cfg.batch_size // world.size, sampler=self.sampler,
                                 drop_last=True, num_workers=cfg.workers, generator=torch.Generator(),
                                 pin_memory=world.device.type == "cuda")
        self.log = RunLog(self.output, enabled=world.main)
        self.last, self.best = self.output / "last.pt", self.output / "best.pt"

    def _wrap(self, model: nn.Module) -> nn.Module:
        """The module the steps run through: the model itself, or its DDP (and SyncBatchNorm) wrapper."""
        if not self.world.distributed:
            return model
        net = nn.SyncBatchNorm.convert_sync_batchnorm(model) if self.cfg.sync_bn else model
        device_ids = [self.world.device.index] if self.world.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(net, device_ids=device_ids)

    def resume(self) -> None:
        """Restores the checkpoint (if any), sets the schedule at the current step and seeds the streams."""
        cfg, state, world = self.cfg, self.state, self.world
        if self.ckpt is not None:
            state.load_state_dict(self.ckpt, world.size)
            self.saved_step = state.step
        steps = self.steps_per_epoch
        schedule = LRFactor(cfg.epochs * steps, round(cfg.warmup_epochs * steps), cfg.schedule,
                            cfg.step_epochs * steps, cfg.gamma)
        # The rate is a function of the step alone, so a resumed run (even with a changed --epochs, which
        # stretches the schedule) continues from its step count; nothing of the scheduler is stored.
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(state.optimizer, schedule, last_epoch=state.step - 1)
        if self.ckpt is not None and world.main:
            set_rng_state(self.ckpt["rng"])
        else:
            seed_all(cfg.seed + world.rank + 7919 * state.step)  # each rank its own dropout stream
        config = {**asdict(cfg), "resolution": state.model_kwargs["resolution"], "model_kwargs": state.model_kwargs,
                  **state.data, "world_size": world.size, "mult_adds": self.cost.mult_adds,
                  "params": self.cost.params}
        self.log.start(config, step=state.step, epochs_done=state.epoch)
        self.stopped = cfg.max_steps is not None and state.step >= cfg.max_steps

    def save(self, path: Path | None = None, metrics: dict | None = None) -> None:
        if self.world.main:
            self.state.config = asdict(self.cfg)
            self.log.flush()
            path = path or self.last
            save_atomic(self.state.state_dict(metrics), path, keep_previous=path == self.last)
        self.saved_step = self.state.step

    def run_epoch(self, stop: StopSignal) -> None:
        """Steps through the rest of the current epoch, or until a stop is asked for or ``max_steps`` is reached
        (then ``last.pt`` is saved and the run halts)."""
        cfg, state, world = self.cfg, self.state, self.world
        set_sampling_epoch(self.sampler, self.samples, state.epoch, state.seen // world.size)
        self.net.train()
        bar = progress_bar(self.steps_per_epoch, state.seen // cfg.batch_size, f"epoch {state.epoch + 1}/"
                           f"{cfg.epochs}", enabled=world.main and cfg.progress)
        if state.seen == 0:
            state.totals = torch.zeros(3, dtype=torch.float64)
        self.tick = time.perf_counter()
        for x, y in self.loader:
            self._step(x.to(world.device, non_blocking=True, memory_format=self.fmt),
                       y.to(world.device, non_blocking=True), bar)
            self.stopped = cfg.max_steps is not None and state.step >= cfg.max_steps
            self.interrupted = distributed.any_true(stop.requested, world)
            if self.halted or (cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0):
                self.save()
            if self.halted:
                break
        bar.close()

    def _step(self, x: torch.Tensor, y: torch.Tensor, bar) -> None:
        """One optimizer step, after checking on every rank that the loss is finite."""
        cfg, state, world = self.cfg, self.state, self.world
        per_rank = cfg.batch_size // world.size
        loss, logits = training_loss(self.net, x, y, cfg.amp, cfg.label_smoothing)
        stats = distributed.sum_tensor(torch.stack([
            loss.detach().double() * per_rank, (logits.detach().argmax(1) == y).sum().double(),
            torch.tensor(float(per_rank), dtype=torch.float64, device=y.device),
            (~torch.isfinite(loss.detach())).double()]), world)
        if stats[3] > 0:
            where = f"step {state.step + 1} (epoch {state.epoch + 1}, batch {state.seen // cfg.batch_size + 1})"
            kept = (f"the last good checkpoint is {self.last} (step {self.saved_step})"
                    if self.saved_step is not None else "no checkpoint had been written yet")
            raise MobileNetError(f"the loss became {loss.item()} at {where}; training stopped and {kept}. Lower "
                                 "--lr or check the data, then --resume")
        descend(state.optimizer, loss)
        self.scheduler.step()
        state.step += 1
        state.seen += cfg.batch_size
        if state.ema is not None:
            state.ema.update(state.model, state.step)
        state.totals += stats[:3]
        step_loss = float(stats[0] / stats[2])
        self.log.step({"step": state.step, "epoch": state.epoch + 1, "loss": step_loss,
                       "lr": state.optimizer.param_groups[0]["lr"]})
        elapsed = time.perf_counter() - self.tick
        bar.set_postfix(loss=f"{step_loss:.3f}", acc=f"{100 * state.totals[1] / state.totals[2]:.1f}",
                        img_s=f"{state.totals[2] / max(elapsed, 1e-9):.0f}", refresh=False)
        bar.update()

    def end_epoch(self) -> None:
        """Evaluates on the validation split, records the epoch, writes ``last.pt`` (and ``best.pt``)."""
        cfg, state, world = self.cfg, self.state, self.world
        state.epoch, state.seen = state.epoch + 1, 0
        elapsed = time.perf_counter() - self.tick
        metrics = evaluate(state.evaluated, self.bundle.val, cfg.batch_size, amp=cfg.amp,
                           channels_last=cfg.channels_last, world=world, workers=cfg.workers)
        totals = state.totals
        record = {"epoch": state.epoch, "step": state.step, "lr": state.optimizer.param_groups[0]["lr"],
                  "train_loss": float(totals[0] / totals[2]), "train_top1": float(100 * totals[1] / totals[2]),
                  "val_loss": metrics["loss"], "val_top1": metrics["top1"], "val_top5": metrics["top5"],
                  "images_per_s": float(totals[2] / elapsed), "seconds": round(time.time() - self.started, 1)}
        state.history.append(record)
        improved = metrics["top1"] > state.best_top1
        state.best_top1 = max(state.best_top1, metrics["top1"])
        self.save(metrics=metrics)
        if improved:
            self.save(self.best, metrics=metrics)
        self.log.epoch(record, state.history)
        if world.main:
            report(f"epoch {state.epoch}/{cfg.epochs}: train loss {record['train_loss']:.3f} top-1 "
                   f"{record['train_top1']:.1f}% | val loss {metrics['loss']:.3f} top-1 {metrics['top1']:.1f}% "
                   f"top-5 {metrics['top5']:.1f}% | {record['images_per_s']:.0f} img/s", cfg.progress)

    def finish(self) -> dict:
        """The result: where the checkpoints are, the history, cost, and the test split's accuracy when done."""
        cfg, state = self.cfg, self.state
        history = state.history
        result = {"output": str(self.output), "last": str(self.last),
                  "checkpoint": str(self.best if self.best.exists() else self.last), "history": history,
                  "steps": state.step, "epochs_done": state.epoch, "interrupted": self.interrupted,
                  "mult_adds": self.cost.mult_adds, "params": self.cost.params, "best_top1": state.best_top1,
                  "top1": history[-1]["val_top1"] if history else None,
                  "top5": history[-1]["val_top5"] if history else None}
        if state.epoch >= cfg.epochs and getattr(self.bundle, "test", None) is not None:
            test = evaluate(state.evaluated, self.bundle.test, cfg.batch_size, amp=cfg.amp,
                            channels_last=cfg.channels_last, world=self.world, workers=cfg.workers)
            result["test"] = {"top1": test["top1"], "top5": test["top5"]}
        if self.world.main and history:
            title = f"{cfg.model} alpha={cfg.alpha} resolution={state.model_kwargs['resolution']}"
            result["plot"] = str(plot_curves(history, self.output / "curves.png", title))
        result["seconds"] = time.time() - self.started
        return result
