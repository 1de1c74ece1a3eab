"""What a training run carries from step to step, and the checkpoint format, which is exactly that state.

A checkpoint is ``RunState.state_dict()`` written by :func:`mobilenet.checkpoint.save_atomic`; resuming is
``RunState.load_state_dict(checkpoint)``. Adding something to the run (gradient accumulation, a second EMA) means
adding a field here and to :data:`FIELDS`, and nowhere else.

Versions: 1 also stored the ``LambdaLR`` scheduler's state; from 2 the learning rate is recomputed from the step
(the schedule is a pure function of it), so files of both versions resume the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .checkpoint import FORMAT, rng_state
from .errors import MobileNetError
from .optim import ModelEMA
from .statedict import load_strict

VERSION = 2
# Every field a checkpoint holds, in the order written.
FIELDS = ("format", "version", "config", "model_kwargs", "model", "ema", "optimizer", "epoch", "step", "seen",
          "epoch_totals", "rng", "history", "best_top1", "metrics", "class_names", "mean", "std", "in_chans")


@dataclass
class RunState:
    """The model, optimizer and EMA of a run, where it is (epoch, step, samples into the epoch) and its record.

    Attributes:
        config: the run's options as a plain dict (``asdict(TrainConfig)``).
        model_kwargs: what ``create_model`` was called with besides the name.
        data: ``class_names``, ``mean``, ``std``, ``in_chans`` of the training data.
        epoch: epochs finished; step: optimizer steps taken; seen: samples of the current epoch consumed.
        totals: this epoch's loss sum, correct predictions and samples, summed over processes.
        history: one record per finished epoch; best_top1: the best validation top-1 so far.
    """

    config: dict
    model_kwargs: dict
    model: nn.Module
    optimizer: torch.optim.Optimizer
    ema: ModelEMA | None
    data: dict
    epoch: int = 0
    step: int = 0
    seen: int = 0
    totals: torch.Tensor = field(default_factory=lambda: torch.zeros(3, dtype=torch.float64))
    history: list = field(default_factory=list)
    best_top1: float = -1.0

    @property
    def evaluated(self) -> nn.Module:
        """The weights that are evaluated and exported: the EMA's when the run keeps one."""
        return self.ema.module if self.ema is not None else self.model

    def state_dict(self, metrics: dict | None = None) -> dict:
        """The checkpoint: tensors and plain Python data only, so it loads with ``weights_only=True``."""
        return {
            "format": FORMAT, "version": VERSION, "config": dict(self.config), "model_kwargs": self.model_kwargs,
            "model": self.model.state_dict(), "ema": self.ema.module.state_dict() if self.ema else None,
            "optimizer": self.optimizer.state_dict(), "epoch": self.epoch, "step": self.step, "seen": self.seen,
            "epoch_totals": self.totals.clone(), "rng": rng_state(), "history": list(self.history),
            "best_top1": self.best_top1, "metrics": metrics or {}, **{k: self.data[k] for k in FIELDS[-4:]},
        }

    def load_state_dict(self, ckpt: dict, world_size: int = 1) -> None:
        """Restores weights, optimizer, EMA and position from a checkpoint of any version.

        Raises:
            MobileNetError: the weights do not fit the model, or the checkpoint stopped partway into an epoch at a
                sample count that ``world_size`` processes cannot split.
        """
        seen = ckpt["seen"]
        if seen % world_size:
            raise MobileNetError(f"the checkpoint stopped {seen} samples into an epoch, which {world_size} "
                                 f"processes cannot split; resume with a world size dividing {seen}")
        load_strict(self.model, ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.ema is not None and ckpt.get("ema") is not None:
            load_strict(self.ema.module, ckpt["ema"])
        self.epoch, self.step, self.seen = ckpt["epoch"], ckpt["step"], seen
        self.history, self.best_top1 = list(ckpt["history"]), ckpt["best_top1"]
        self.totals = ckpt["epoch_totals"].clone()
