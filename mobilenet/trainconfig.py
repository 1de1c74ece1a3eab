"""The options of a training run, checked in one place."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from .errors import MobileNetError
from .optim import OPTIMIZERS, SCHEDULES

AMP_MIN_RESOLUTION = 128
# Options that may change when a run is resumed; every other option must equal the checkpoint's.
RESUMABLE_CHANGES = {"epochs", "output", "resume", "checkpoint_every", "max_steps", "workers", "device", "amp",
                     "channels_last", "sync_bn", "progress"}


@dataclass
class TrainConfig:
    """Every training option; the ``mobilenet train`` flags have the same names (``batch_size`` is
    ``--batch-size``). Defaults train the demo model: MobileNetV1 at α = 0.5, 64×64, on the embedded "patterns" data.

    Attributes:
        model: registered model name (``mobilenet list``).
        alpha: width multiplier α: every layer's channels × α, cost ∝ α².
        resolution: input side ρ·224 in pixels; None means 224.
        data: embedded dataset name, or a path (image folder, ImageNet layout, CIFAR or MNIST IDX directory).
        data_format: None to detect, or ``"embedded"``, ``"imagefolder"``, ``"cifar"``, ``"idx"``.
        in_chans: 3 (grayscale is converted to RGB) or 1.
        limit: use at most this many training (and validation) samples.
        val_fraction: share held out for validation from a plain class-folder dataset.
        augment: ``"standard"`` (random-resized crop + flip), ``"light"`` (the V1 paper's lighter setting for
            small models) or ``"none"``.
        epochs: passes over the training split.
        batch_size: the global batch; under DDP each of N processes takes batch_size / N.
        lr: peak learning rate, reached after the warm-up.
        optimizer: ``"sgd"`` (momentum), ``"rmsprop"`` (the papers' optimizer), ``"adamw"`` or ``"lars"`` (SGD on
            gradients rescaled per tensor, so ``lr`` is every layer's relative step).
        momentum: momentum of SGD, RMSprop and LARS; AdamW's first-moment decay.
        weight_decay: L2 factor on conv and linear weights (not depthwise filters, norms or biases).
        decay_all: apply weight decay to every parameter.
        schedule: ``"cosine"``, ``"step"`` or ``"constant"``, after a linear warm-up.
        warmup_epochs: warm-up length (fractions allowed).
        step_epochs: for ``"step"``: multiply the rate by ``gamma`` every this many epochs.
        gamma: the step schedule's factor.
        label_smoothing: target smoothing ε in [0, 1).
        dropout: dropout before the classifier; None keeps the model's default.
        ema: decay of an exponential moving average of the weights (e.g. 0.999); 0 disables it.
        amp: bf16 autocast for the forward pass (CPU and CUDA); None turns it on from ``AMP_MIN_RESOLUTION`` up,
            where bf16 kernels outrun fp32 on the CPU (below it fp32 channels_last is faster; ``bench-train``).
        channels_last: NHWC memory format for model and inputs.
        seed: seeds data order, augmentation, initialisation and dropout.
        output: run directory; None means ``runs/<model>-<timestamp>``.
        resume: a checkpoint, or a run directory (its ``last.pt``), to continue exactly.
        checkpoint_every: also save ``last.pt`` every this many steps (0: only at the end of each epoch).
        max_steps: stop (saving ``last.pt``) after this many steps in all, the schedule still spanning ``epochs``.
        workers: data-loading worker processes.
        device: ``"cpu"``, ``"cuda"``, or None for CUDA when available.
        sync_bn: synchronise batch-norm statistics across processes (CUDA DDP only).
        progress: show progress bars.
    """

    model: str = "mobilenet_v1"
    alpha: float = 0.5
    resolution: int | None = 64
    data: str = "patterns"
    data_format: str | None = None
    in_chans: int = 3
    limit: int | None = None
    val_fraction: float = 0.1
    augment: str = "light"
    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.1
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 4e-5
    decay_all: bool = False
    schedule: str = "cosine"
    warmup_epochs: float = 0.3
    step_epochs: int = 30
    gamma: float = 0.1
    label_smoothing: float = 0.1
    dropout: float | None = None
    ema: float = 0.0
    amp: bool | None = None
    channels_last: bool = True
    seed: int = 0
    output: str | None = None
    resume: str | None = None
    checkpoint_every: int = 0
    max_steps: int | None = None
    workers: int = 0
    device: str | None = None
    sync_bn: bool = False
    progress: bool = True

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        """A config from a dict such as a checkpoint's ``config``, ignoring keys it does not know."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    def check(self) -> None:
        """Refuses a value outside its range with one :class:`MobileNetError` that names the option."""
        def bad(name, accepted):
            raise MobileNetError(f"{name} must be {accepted}, got {getattr(self, name)!r}")

        for name in ("epochs", "batch_size", "step_epochs", "in_chans"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                bad(name, "an integer >= 1")
        for name in ("lr", "gamma"):
            if not getattr(self, name) > 0 or not math.isfinite(getattr(self, name)):
                bad(name, "a finite number > 0")
        for name in ("momentum", "weight_decay", "warmup_epochs", "checkpoint_every", "workers"):
            if not getattr(self, name) >= 0:
                bad(name, "a number >= 0")
        if not 0 <= self.label_smoothing < 1:
            bad("label_smoothing", "in [0, 1)")
        if not 0 <= self.ema < 1:
            bad("ema", "in [0, 1) (0 disables it)")
        if self.optimizer not in OPTIMIZERS:
            bad("optimizer", f"one of {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            bad("schedule", f"one of {', '.join(SCHEDULES)}")
        if self.max_steps is not None and self.max_steps < 1:
            bad("max_steps", "an integer >= 1")
